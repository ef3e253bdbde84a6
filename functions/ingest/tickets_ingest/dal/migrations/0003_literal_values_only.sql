-- 0003: typed values are stored only when they are literals of the shape the export writes.
-- PostgreSQL's input functions also read words (now, today, epoch, infinity, NaN, Julian
-- J2461214, ...): a late `now` beat newer rows through the recency guard, and a stored
-- `infinity` kept every later update out for ever.

-- The anchored pattern of a kind's values, spaces around allowed (they are trimmed) and
-- empty allowed (NULL); '' (anything) for kinds without special words. The patterns are
-- core/schema.py's VALUE_SHAPES verbatim (tests/integration/test_values.py compares them).
CREATE OR REPLACE FUNCTION tickets.value_shape(kind text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE kind
        WHEN 'timestamptz' THEN '^ *([0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)? *$'
        WHEN 'date' THEN '^ *([0-9]{4}-[0-9]{2}-[0-9]{2})? *$'
        WHEN 'double precision' THEN '^ *(-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)? *$'
        WHEN 'numeric' THEN '^ *(-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)? *$'
        ELSE ''
    END
$$;

-- Why a value is not a literal of its kind (for rejected_rows), or NULL when it is one.
CREATE OR REPLACE FUNCTION tickets.literal_problem(value text, kind text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL OR value ~ tickets.value_shape(kind) THEN NULL
    ELSE format('"%s" is not a literal %s as the export writes it (%s)', value, kind,
        CASE kind
            WHEN 'timestamptz' THEN 'YYYY-MM-DD HH:MM:SS, optionally with a fraction and Z or an offset'
            WHEN 'date' THEN 'YYYY-MM-DD'
            ELSE 'a decimal number'
        END)
    END
$$;

CREATE OR REPLACE FUNCTION tickets.not_literal(value text, kind text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'invalid_text_representation',
        MESSAGE = tickets.literal_problem(value, kind);
END;
$$;

-- The value to cast (trimmed; empty is NULL), or a class 22 error, so that the optimistic
-- upsert takes the slow path that sets the row aside. One expression: the planner inlines
-- it with `kind` folded away. The pattern costs ~5 us a value here, several times the cast,
-- so the exporter's own layouts are checked first with LIKE and a character class (~1 us):
-- fixed separators, no other separator, nothing but digits. A number made only of digits,
-- '.' and '-' is either of the shape or refused by the cast itself.
-- (The upsert, dal/loader.py, takes the character class once per row before calling this.)
CREATE OR REPLACE FUNCTION tickets.literal(value text, kind text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN value IS NULL OR value = '' THEN NULL
        WHEN CASE kind
            WHEN 'timestamptz' THEN value LIKE '____-__-__ __:__:__' AND value !~ '[^0-9 :-]'
                AND value NOT LIKE '%-%-%-%' AND value NOT LIKE '%:%:%:%'
                AND value NOT LIKE '% % %'
            WHEN 'date' THEN value LIKE '____-__-__' AND value !~ '[^0-9-]'
                AND value NOT LIKE '%-%-%-%'
            WHEN 'double precision' THEN value !~ '[^0-9.-]'
            WHEN 'numeric' THEN value !~ '[^0-9.-]'
            ELSE true
        END THEN value
        WHEN value ~ tickets.value_shape(kind) THEN nullif(btrim(value), '')
        ELSE tickets.not_literal(value, kind)
    END
$$;

-- Slow path: the shape first, then the exact PostgreSQL error of the cast.
CREATE OR REPLACE FUNCTION tickets.input_error(value text, kind text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    problem text := tickets.literal_problem(value, kind);
BEGIN
    IF problem IS NOT NULL THEN
        RETURN problem;
    END IF;
    IF value IS NULL OR btrim(value) = '' THEN
        RETURN NULL;
    END IF;
    CASE kind
        WHEN 'timestamptz' THEN PERFORM btrim(value)::timestamptz;
        WHEN 'date' THEN PERFORM btrim(value)::date;
        WHEN 'double precision' THEN PERFORM btrim(value)::double precision;
        WHEN 'numeric' THEN PERFORM btrim(value)::numeric;
        WHEN 'boolean' THEN PERFORM btrim(value)::boolean;
        ELSE NULL;
    END CASE;
    RETURN NULL;
EXCEPTION WHEN data_exception THEN
    RETURN SQLERRM;
END;
$$;
