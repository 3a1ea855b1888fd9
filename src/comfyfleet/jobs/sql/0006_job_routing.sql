-- What routing needs of a job, fixed at submit: the model files its loaders name (a JSON array
-- of `folder_type/name`, matched against what the claiming instance holds) and the running
-- limit of its API key (NULL: none). Jobs stored before this migration need no model as far as
-- routing knows, and have no limit.

ALTER TABLE jobs ADD COLUMN models TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN max_running INTEGER;
