/* comfyfleet dashboard: what the pages do in the browser beyond htmx's live refresh.
 *
 * Every action is a call to the documented /v1 API, made here with fetch; an API error is shown
 * as the API words it, next to what caused it. A session that ended sends the browser to the
 * sign-in page, which brings it back. The components are registered for Alpine's CSP build
 * (the pages allow no inline script and no eval).
 */
(function () {
  "use strict";

  function signIn() {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  function notice(text) {
    const box = document.getElementById("notice");
    if (!box) return;
    box.textContent = text || "";
    box.hidden = !text;
  }

  function messageOf(data, status) {
    if (data && data.error && data.error.message) return data.error.message;
    return "the API answered " + status;
  }

  /* One /v1 call: {ok, status, data, message}. A 401 means the session ended: sign in again. */
  async function call(method, url, body, raw) {
    const init = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (raw !== undefined) {
      init.body = raw;
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = typeof body === "string" ? body : JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      return { ok: false, status: 0, data: null, message: "the gateway did not answer (" + err.message + ")" };
    }
    if (response.status === 401) {
      signIn();
      return { ok: false, status: 401, data: null, message: "signing in again" };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    return { ok: response.ok, status: response.status, data: data, message: response.ok ? "" : messageOf(data, response.status) };
  }

  function liveUrl() {
    const params = new URLSearchParams(location.search);
    params.set("part", "live");
    return location.pathname + "?" + params.toString();
  }

  function refreshLive() {
    if (window.htmx && document.getElementById("live")) {
      window.htmx.ajax("GET", liveUrl(), { target: "#live", swap: "outerHTML" });
    } else {
      location.reload();
    }
  }

  function human(bytes) {
    if (bytes === null || bytes === undefined) return "?";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let n = bytes;
    let unit = 0;
    while (Math.abs(n) >= 1024 && unit < units.length - 1) {
      n /= 1024;
      unit += 1;
    }
    return (unit === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[unit];
  }

  function follow(jobId, handlers) {
    const source = new EventSource("/v1/jobs/" + encodeURIComponent(jobId) + "/events?previews=true");
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (event) {
        let message = null;
        try {
          message = JSON.parse(event.data);
        } catch (err) {
          return;
        }
        handlers[name](message.data || {}, source);
      });
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) return;
    };
    return source;
  }

  const FINAL = ["succeeded", "failed", "cancelled"];

  /* htmx: a polled part whose session ended, or a gateway that went away. */
  document.addEventListener("htmx:responseError", function (event) {
    if (event.detail.xhr && event.detail.xhr.status === 401) signIn();
  });
  document.addEventListener("htmx:sendError", function () {
    notice("The gateway does not answer right now; this page tries again.");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) notice("");
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    event.detail.target.querySelectorAll("pre.log").forEach(function (log) {
      log.scrollTop = log.scrollHeight;
    });
  });

  document.addEventListener("alpine:init", function () {
    const Alpine = window.Alpine;

    /* A button that makes one /v1 call: data-method, data-url, data-confirm, data-then. */
    Alpine.data("action", function () {
      return {
        busy: false,
        error: "",
        async send() {
          const d = this.$root.dataset;
          if (d.confirm && !window.confirm(d.confirm)) return;
          this.busy = true;
          this.error = "";
          const answer = await call(d.method || "POST", d.url);
          this.busy = false;
          if (!answer.ok) {
            this.error = answer.message;
            return;
          }
          if (d.then === "job" && answer.data && answer.data.id) {
            location.href = "/dashboard/jobs/" + encodeURIComponent(answer.data.id);
          } else if (d.then === "refresh") {
            refreshLive();
          } else {
            location.reload();
          }
        },
      };
    });

    /* A template's form, sent as /v1/templates/{name}/jobs takes it; the API's verdict on a
     * value is shown under that value's field. */
    Alpine.data("runForm", function () {
      return {
        busy: false,
        busyText: "",
        error: "",
        errors: {},
        fieldError(name) {
          return this.errors[name] || "";
        },
        async value(field) {
          const input = field.querySelector("[data-type]");
          const type = input.dataset.type;
          if (type === "image") {
            const file = input.files && input.files[0];
            const url = field.querySelector("[data-type=image-url]");
            if (file) {
              this.busyText = "Uploading " + file.name + "…";
              const form = new FormData();
              form.append("file", file, file.name);
              const uploaded = await call("POST", "/v1/assets", undefined, form);
              if (!uploaded.ok) throw new Error(uploaded.message);
              return JSON.stringify("asset:" + uploaded.data.id);
            }
            return url && url.value.trim() ? JSON.stringify(url.value.trim()) : null;
          }
          if (type === "boolean") return input.checked ? "true" : "false";
          const text = input.value.trim();
          if (type === "integer" || type === "number") {
            if (text === "") return null;
            /* Digits travel as they are (a 64-bit seed would lose precision as a JS number);
             * anything else goes as a string, and the API says what it expected. */
            if (/^-?\d+$/.test(text)) return text;
            if (type === "number" && /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) return text;
            return JSON.stringify(text);
          }
          return JSON.stringify(input.value);
        },
        async submit() {
          const form = this.$root;
          this.busy = true;
          this.error = "";
          this.errors = {};
          this.busyText = "Sending…";
          const parts = [];
          try {
            for (const field of form.querySelectorAll("[data-field]")) {
              const json = await this.value(field);
              if (json !== null) parts.push(JSON.stringify(field.dataset.field) + ":" + json);
            }
          } catch (err) {
            this.busy = false;
            this.error = err.message;
            return;
          }
          const body = '{"params":{' + parts.join(",") + "}}";
          const url = "/v1/templates/" + encodeURIComponent(form.dataset.template) + "/jobs";
          const answer = await call("POST", url, body);
          this.busy = false;
          if (answer.ok) {
            location.href = "/dashboard/jobs/" + encodeURIComponent(answer.data.id);
            return;
          }
          const details = answer.data && answer.data.error && answer.data.error.details;
          const named = details && details.parameter;
          const field = named ? form.querySelector('[data-field="' + CSS.escape(named) + '"]') : null;
          if (field) {
            this.errors = Object.assign({}, this.errors, { [named]: answer.message });
            const input = field.querySelector("[data-type]");
            if (input) {
              input.setAttribute("aria-invalid", "true");
              input.focus();
            }
          } else {
            this.error = answer.message;
          }
        },
      };
    });

    /* A workflow file, dropped or chosen, sent to /v1/jobs as it is. */
    Alpine.data("workflowDrop", function () {
      return {
        over: false,
        busy: false,
        busyText: "",
        error: "",
        drop(event) {
          this.over = false;
          const file = event.dataTransfer && event.dataTransfer.files[0];
          if (file) this.send(file);
        },
        choose(event) {
          const file = event.target.files && event.target.files[0];
          if (file) this.send(file);
        },
        async send(file) {
          this.error = "";
          this.busy = true;
          this.busyText = "Sending " + file.name + "…";
          let parsed;
          try {
            parsed = JSON.parse(await file.text());
          } catch (err) {
            this.busy = false;
            this.error = file.name + " is not JSON: " + err.message;
            return;
          }
          const isRequest = parsed && typeof parsed.workflow === "object" && !Array.isArray(parsed.workflow);
          const answer = await call("POST", "/v1/jobs", isRequest ? parsed : { workflow: parsed });
          this.busy = false;
          if (answer.ok) {
            location.href = "/dashboard/jobs/" + encodeURIComponent(answer.data.id);
          } else {
            this.error = answer.message;
          }
        },
      };
    });

    /* A model install (a preset, or a URL from a form), followed on its job's event stream. */
    Alpine.data("install", function () {
      return {
        busy: false,
        shown: false,
        percent: 0,
        text: "",
        error: "",
        files: {},
        async start() {
          const root = this.$root;
          const d = root.dataset;
          let body;
          if (d.form) {
            body = {};
            for (const input of root.querySelectorAll("input[name]")) {
              const value = input.value.trim();
              if (value) body[input.name] = value;
            }
          }
          this.error = "";
          this.busy = true;
          const answer = await call("POST", d.url, body);
          if (!answer.ok) {
            this.busy = false;
            this.error = answer.message;
            return;
          }
          this.shown = true;
          this.percent = 0;
          this.text = "queued";
          const self = this;
          follow(answer.data.id, {
            downloading(data) {
              self.files = Object.assign({}, self.files, { [data.file]: data });
              let done = 0;
              let total = 0;
              Object.values(self.files).forEach(function (f) {
                done += f.done || 0;
                total += f.total || 0;
              });
              self.percent = total ? Math.min(100, (100 * done) / total) : 0;
              const speed = data.speed_bps ? human(data.speed_bps) + "/s" : "";
              const eta = data.eta_s !== null && data.eta_s !== undefined ? Math.ceil(data.eta_s) + " s left" : "";
              self.text = [data.file + ": " + human(data.done) + " of " + human(data.total), speed, eta].filter(Boolean).join(" · ");
            },
            status(data, source) {
              if (FINAL.indexOf(data.status) < 0) {
                self.text = data.status === "running" ? "downloading" : data.status;
                return;
              }
              source.close();
              self.busy = false;
              if (data.status === "succeeded") {
                self.percent = 100;
                self.text = "installed";
                setTimeout(function () {
                  location.reload();
                }, 2500);
              } else {
                self.error = (data.error && data.error.message) || "the install " + data.status;
              }
            },
          });
        },
      };
    });

    /* A job's live events: each node's state, the sampler's preview, the end. */
    Alpine.data("jobWatch", function () {
      return {
        nodes: {},
        initial: {},
        preview: "",
        running: null,
        ended: false,
        init() {
          const self = this;
          this.$root.querySelectorAll("[data-node]").forEach(function (li) {
            self.initial[li.dataset.node] = li.dataset.state;
          });
          follow(this.$root.dataset.job, {
            cached(data) {
              (data.nodes || []).forEach(function (id) {
                self.set(id, { state: "cached" });
              });
            },
            executing(data) {
              self.advance(String(data.node));
            },
            progress(data) {
              self.advance(String(data.node));
              self.set(String(data.node), { state: "running", percent: Math.round(100 * (data.value || 0)) });
            },
            executed(data) {
              self.set(String(data.node), { state: "done", percent: self.percentOf(String(data.node)) ? 100 : null });
            },
            preview(data) {
              self.preview = "data:image/" + (data.format || "jpeg") + ";base64," + data.base64;
            },
            status(data, source) {
              if (FINAL.indexOf(data.status) < 0) return;
              source.close();
              self.ended = true;
              if (self.running) self.set(self.running, { state: data.status === "succeeded" ? "done" : "failed" });
              self.running = null;
              if (self.$root.dataset.final !== "true") refreshLive();
            },
          });
        },
        set(id, value) {
          this.nodes = Object.assign({}, this.nodes, { [id]: Object.assign({}, this.nodes[id] || {}, value) });
        },
        advance(id) {
          if (this.running && this.running !== id && this.stateOf(this.running) === "running") {
            this.set(this.running, { state: "done" });
          }
          this.running = id;
          if (this.stateOf(id) !== "running") this.set(id, { state: "running" });
        },
        stateOf(id) {
          return (this.nodes[id] && this.nodes[id].state) || this.initial[id] || "waiting";
        },
        percentOf(id) {
          const node = this.nodes[id];
          return node && node.percent !== undefined && node.percent !== null ? node.percent : 0;
        },
        hasPercent(id) {
          const node = this.nodes[id];
          return Boolean(node && node.percent !== undefined && node.percent !== null);
        },
        labelOf(id) {
          const state = this.stateOf(id);
          return state === "running" && this.hasPercent(id) ? "running " + this.percentOf(id) + "%" : state;
        },
      };
    });

    /* The stock ComfyUI editor of the fleet, opened with a job's graph loaded. */
    Alpine.data("openEditor", function () {
      return {
        async open() {
          const id = this.$root.dataset.job;
          const editor = window.open("/", "_blank");
          if (!editor) {
            notice("The browser blocked the editor's window: allow pop-ups for this site.");
            return;
          }
          const answer = await call("GET", "/v1/jobs/" + encodeURIComponent(id) + "/workflow");
          if (!answer.ok) {
            editor.close();
            notice(answer.message);
            return;
          }
          /* Once the editor has set itself up (its own first graph in place, or a few seconds
           * after its app appeared), the job's graph replaces that one. */
          const deadline = Date.now() + 60000;
          let readyAt = 0;
          (function load() {
            try {
              const app = editor.app;
              if (app && app.graph && app.loadApiJson) {
                readyAt = readyAt || Date.now();
                if (app.graph.nodes.length > 0 || Date.now() - readyAt > 3000) {
                  app.loadApiJson(answer.data, "job " + id);
                  return;
                }
              }
            } catch (err) {
              /* not loaded yet */
            }
            if (!editor.closed && Date.now() < deadline) setTimeout(load, 250);
          })();
        },
      };
    });

    /* A new API key: its text is shown here once. */
    Alpine.data("newKey", function () {
      return {
        busy: false,
        error: "",
        token: "",
        copied: false,
        async create() {
          const form = this.$root.querySelector("form");
          const body = { name: form.elements.name.value.trim(), scopes: [] };
          form.querySelectorAll("input[name=scopes]:checked").forEach(function (box) {
            body.scopes.push(box.value);
          });
          const days = form.elements.days.value.trim();
          if (days) {
            /* Not a number: sent as written, for the API to say so (never a key that lasts). */
            body.expires_in_s = Number.isFinite(Number(days)) ? Number(days) * 86400 : days;
          }
          this.busy = true;
          this.error = "";
          this.copied = false;
          const answer = await call("POST", "/v1/keys", body);
          this.busy = false;
          if (!answer.ok) {
            this.error = answer.message;
            return;
          }
          this.token = answer.data.key;
          form.reset();
          if (window.htmx) {
            window.htmx.ajax("GET", "/dashboard/settings", { target: "#keys-table", select: "#keys-table", swap: "outerHTML" });
          }
        },
        async copy() {
          try {
            await navigator.clipboard.writeText(this.token);
            this.copied = true;
          } catch (err) {
            this.error = "copying failed: select the key and copy it by hand";
          }
        },
      };
    });
  });
})();
