-- Extensions and the helpers every table uses.
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, variant 10, then random bits.
-- Time-ordered ids keep B-tree inserts local; Postgres 15 has no built-in generator.
CREATE FUNCTION uuid_generate_v7() RETURNS uuid
LANGUAGE plpgsql VOLATILE PARALLEL SAFE AS $$
DECLARE
    ts_ms bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
    bytes bytea := decode(lpad(to_hex(ts_ms), 12, '0'), 'hex') || gen_random_bytes(10);
BEGIN
    bytes := set_byte(bytes, 6, (get_byte(bytes, 6) & 15) | 112);   -- version 0111
    bytes := set_byte(bytes, 8, (get_byte(bytes, 8) & 63) | 128);   -- variant 10
    RETURN encode(bytes, 'hex')::uuid;
END
$$;
COMMENT ON FUNCTION uuid_generate_v7() IS 'Time-ordered UUID version 7 (RFC 9562).';

-- One trigger function maintains updated_at on every table that has it.
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Makes a table append-only: rejects every UPDATE except an ON DELETE SET NULL of one of the
-- columns named in the trigger's arguments (an actor that was deleted). Rows still go away with
-- their parent (cascades) and by retention jobs, so DELETE is not guarded.
CREATE FUNCTION reject_modification() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_row jsonb := to_jsonb(OLD);
    new_row jsonb := to_jsonb(NEW);
    col text;
BEGIN
    FOREACH col IN ARRAY coalesce(TG_ARGV, '{}'::text[]) LOOP
        IF new_row -> col = 'null'::jsonb THEN
            old_row := old_row - col;
            new_row := new_row - col;
        END IF;
    END LOOP;
    IF old_row = new_row THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END
$$;
