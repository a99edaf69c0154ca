-- Scheduler (issue 6): a resource group's scheduler options live in etcd (set live, watched by
-- every manager: flotilla/resource-groups/<name>), so the columns that would have held a second
-- copy go; the group row keeps what the database needs (identity, activity, keypair sets).
ALTER TABLE resource_groups DROP COLUMN scheduler;
ALTER TABLE resource_groups DROP COLUMN agent_selector;
ALTER TABLE resource_groups DROP COLUMN scheduler_opts;
