-- A job's event notification says whether the event is a status: the payload is 's' or 'e'
-- followed by the job id. Whoever waits only for a job's end (a synchronous submit) wakes on
-- its status events alone, instead of reading the job's events after each progress step.
CREATE OR REPLACE FUNCTION comfyfleet_event_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'comfyfleet_events',
        CASE WHEN NEW.kind = 'status' THEN 's' ELSE 'e' END || NEW.job_id
    );
    RETURN NULL;
END;
$$;
