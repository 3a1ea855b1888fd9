-- An instance holds several models at once (a checkpoint and its LoRAs, a UNet and its text
-- encoders): the registry keeps the set its agent reports, as a JSON array of
-- `folder_type/name`, in place of the single name it had room for. No agent ever wrote one, so
-- nothing is converted: NULL reads as none.

ALTER TABLE fleet_instances RENAME COLUMN loaded_model TO loaded_models;
