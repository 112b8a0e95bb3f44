-- The index the README recommends: it lets the agent read the 24-hour window straight from the
-- index (time_modified first for the range, api_id and status_id so no table row is visited).
-- Add it through a Django migration, so Django knows about it, with this in the Transaction model:
--
--     class Meta:
--         indexes = [models.Index(fields=["time_modified", "api", "status"], name="apimetrics_txn_window")]
--
-- then `manage.py makemigrations && manage.py migrate`. The statement Django runs is:
CREATE INDEX IF NOT EXISTS "apimetrics_txn_window" ON "apiMetrics_transaction" ("time_modified", "api_id", "status_id");
