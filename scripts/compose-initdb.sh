#!/bin/sh
# Run once by the postgres image of compose.yaml on an empty data folder (/docker-entrypoint-initdb.d): the pipeline's
# role `tootpipe` (no superuser, no CREATEDB, no CREATEROLE) owning the database and its public schema, as the
# embedded PostgreSQL does. The superuser (POSTGRES_USER, DB_ADMIN_PASSWORD) is for an administrator alone.
# The password reaches psql as a variable, quoted by psql (:'pw'), never through the shell or the SQL text.
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$TOOTPIPE_DB_PASSWORD" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE tootpipe LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
ALTER DATABASE tootpipe OWNER TO tootpipe;
ALTER SCHEMA public OWNER TO tootpipe;
SQL
