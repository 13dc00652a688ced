-- Each applied migration's checksum (SHA-256 of its file), so an edited migration that a
-- database has already applied is found (serving.db.migrate stops with the file's name).
-- Databases that applied migrations before this one get the checksums of the files as
-- they are on the first run that knows about checksums.
ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum TEXT;
