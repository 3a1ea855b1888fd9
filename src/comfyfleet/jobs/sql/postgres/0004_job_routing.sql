-- What routing needs of a job, fixed at submit: the model files its loaders name (as
-- `folder_type/name`; an array, so a claim can test `&&` against what the claiming instance
-- holds) and the running limit of its API key (NULL: none). Jobs stored before this migration
-- need no model as far as routing knows, and have no limit. A key's running jobs are counted
-- through `jobs_owner_status_seq`.

ALTER TABLE jobs ADD COLUMN models text[] NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN max_running integer;
