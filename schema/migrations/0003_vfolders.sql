-- Virtual folders (issue 9): pending uploads (tus) and downloads, each behind a random token
-- (stored hashed), so a transfer resumes through any manager until it expires; when a folder
-- went to the trash.

CREATE TABLE vfolder_transfers (
  token_hash   text PRIMARY KEY,                     -- hex SHA-256 of the token handed out
  id           uuid NOT NULL UNIQUE,                 -- names an upload's part file: <root>/.tus/<id>
  kind         text NOT NULL CHECK (kind IN ('upload', 'download')),
  vfolder_id   uuid NOT NULL REFERENCES vfolders(id) ON DELETE CASCADE,
  access_key   text NOT NULL REFERENCES keypairs(access_key) ON DELETE CASCADE,
  path         text NOT NULL,                        -- below the folder, '/'-separated
  size         bigint CHECK (size IS NULL OR size >= 0),   -- an upload's Upload-Length
  completed_at timestamptz,                          -- an upload moved into the folder
  expires_at   timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vfolder_transfers_folder ON vfolder_transfers (vfolder_id) WHERE completed_at IS NULL;
CREATE INDEX vfolder_transfers_expiry ON vfolder_transfers (expires_at);

ALTER TABLE vfolders ADD COLUMN trashed_at timestamptz;
