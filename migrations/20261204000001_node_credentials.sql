-- Each node's own credential (PGN1.ID.SECRET), made by Register: only its
-- SHA-256 digest is kept. NULL for nodes registered before credentials
-- existed: they are refused until dropped and created again.
ALTER TABLE node ADD COLUMN credential_digest text;
