"""PostgreSQL connections ask for keepalives and a TCP user timeout, so a silent link fails
calls instead of hanging them; a URL that sets its own values keeps them."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from comfyfleet.db._postgres import LINK_CHECKS, with_link_checks


def test_a_plain_url_gets_every_check() -> None:
    params = conninfo_to_dict(with_link_checks("postgresql://u:pw@db.internal:5432/fleet"))
    assert params["host"] == "db.internal" and params["password"] == "pw"
    assert {k: params[k] for k in LINK_CHECKS} == LINK_CHECKS


def test_the_urls_own_values_win() -> None:
    url = "postgresql://u@db/fleet?tcp_user_timeout=0&keepalives_idle=30"
    params = conninfo_to_dict(with_link_checks(url))
    assert params["tcp_user_timeout"] == "0" and params["keepalives_idle"] == "30"
    assert params["keepalives_count"] == LINK_CHECKS["keepalives_count"]
