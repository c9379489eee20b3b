-- Runs once before the other regression files.
CREATE EXTENSION pg_attribution;
-- Shows an error as "SQLSTATE: message" so the expected output pins the code too.
CREATE SCHEMA regress;
CREATE FUNCTION regress.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
GRANT USAGE ON SCHEMA regress TO PUBLIC;
