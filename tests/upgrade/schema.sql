-- The shape of the installed pg_attribution, one property per line, sorted, with no OIDs:
-- tests/upgrade/run.sh runs it in a database upgraded from 0.1.0 and in a fresh install
-- and diffs the two. Covers the extension's members (pg_depend deptype 'e') and what
-- hangs off its tables: columns (by name, not attnum), constraints, indexes, policies,
-- triggers, rules, extended statistics, sequences, comments, ACLs (items sorted: their
-- order is history, not meaning), initial privileges (pg_init_privs, what pg_dump
-- compares ACLs against) and the config-dump list. Role names are cluster-wide, so ACLs
-- compare as text. Left out, as they differ between any two installs: OIDs (internal
-- foreign-key triggers are named by them), sequences' current values, and the
-- pg_attver=N column option this server adds to every new relation. Multi-line
-- definitions are split into numbered lines so that a diff points at the line that differs.
WITH ext AS (
    SELECT e.oid, e.extname, e.extversion, e.extrelocatable, e.extconfig, e.extcondition,
           n.nspname, pg_catalog.pg_get_userbyid(e.extowner) AS owner
      FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_attribution'
),
members AS (
    SELECT d.classid, d.objid, d.objsubid
      FROM pg_catalog.pg_depend d, ext
     WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
       AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rels AS (
    SELECT c.*, pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS qname
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      JOIN members m ON m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND m.objid = c.oid
),
procs AS (
    SELECT p.*, p.oid::pg_catalog.regprocedure::text AS signature
      FROM pg_catalog.pg_proc p
      JOIN members m ON m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND m.objid = p.oid
),
lines(line) AS (
    -- The extension itself.
    SELECT 'extension ' || extname || ': version=' || extversion || ' schema=' || nspname
           || ' relocatable=' || extrelocatable || ' owner=' || owner
      FROM ext
    UNION ALL
    -- Tables pg_dump keeps the rows of, with their filters.
    SELECT 'config_dump ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
           || ': condition=' || coalesce(u.cond, '')
      FROM ext, unnest(ext.extconfig, ext.extcondition) AS u(reloid, cond)
      JOIN pg_catalog.pg_class c ON c.oid = u.reloid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    UNION ALL
    -- Every member, whatever its kind.
    SELECT 'member ' || pg_catalog.pg_describe_object(classid, objid, objsubid)
      FROM members
    UNION ALL
    -- Relations: tables, views, sequences.
    SELECT 'relation ' || r.qname || ': relkind=' || r.relkind::text
           || ' rowsecurity=' || r.relrowsecurity || ' forcerowsecurity=' || r.relforcerowsecurity
           || ' options=' || coalesce(r.reloptions::text, '')
           || ' persistence=' || r.relpersistence::text || ' replident=' || r.relreplident::text
           || ' owner=' || pg_catalog.pg_get_userbyid(r.relowner)
           || ' acl=' || coalesce(
                  (SELECT '{' || pg_catalog.string_agg(a::text, ',' ORDER BY a::text) || '}'
                     FROM unnest(r.relacl) a), 'default')
      FROM rels r
    UNION ALL
    -- Columns, by name.
    SELECT 'column ' || r.qname || '.' || pg_catalog.quote_ident(a.attname)
           || ': type=' || pg_catalog.format_type(a.atttypid, a.atttypmod)
           || ' notnull=' || a.attnotnull
           || ' default=' || coalesce(pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), '')
           || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
           || ' collation=' || coalesce(co.collname, '')
           || ' statistics=' || a.attstattarget || ' storage=' || a.attstorage::text
           -- This server stamps every new relation's columns with an option pg_attver=N
           -- (N differs per creation, like an OID), even without the extension loaded.
           || ' options=' || coalesce(
                  (SELECT '{' || pg_catalog.string_agg(o, ',' ORDER BY o) || '}'
                     FROM unnest(a.attoptions) o WHERE o NOT LIKE 'pg\_attver=%'), '')
           || ' acl=' || coalesce(
                  (SELECT '{' || pg_catalog.string_agg(x::text, ',' ORDER BY x::text) || '}'
                     FROM unnest(a.attacl) x), 'default')
      FROM rels r
      JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
      LEFT JOIN pg_catalog.pg_collation co
             ON co.oid = a.attcollation AND a.attcollation <> (SELECT t.typcollation FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid)
     WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f')
    UNION ALL
    -- Constraints (NOT VALID, DEFERRABLE and NO INHERIT are part of the definition).
    SELECT 'constraint ' || r.qname || '.' || pg_catalog.quote_ident(con.conname)
           || ': ' || pg_catalog.pg_get_constraintdef(con.oid, true)
      FROM rels r
      JOIN pg_catalog.pg_constraint con ON con.conrelid = r.oid
    UNION ALL
    -- Indexes, with their names (in pg_get_indexdef).
    SELECT 'index ' || r.qname || '.' || pg_catalog.quote_ident(ic.relname)
           || ': ' || pg_catalog.pg_get_indexdef(i.indexrelid)
           || ' valid=' || i.indisvalid || ' clustered=' || i.indisclustered
           || ' replident=' || i.indisreplident
           || ' options=' || coalesce(ic.reloptions::text, '')
      FROM rels r
      JOIN pg_catalog.pg_index i ON i.indrelid = r.oid
      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
    UNION ALL
    -- Row-level security policies.
    SELECT 'policy ' || r.qname || '.' || pg_catalog.quote_ident(pol.polname)
           || ': cmd=' || pol.polcmd::text || ' permissive=' || pol.polpermissive
           || ' roles=' || CASE WHEN pol.polroles = '{0}' THEN 'public'
                                ELSE (SELECT pg_catalog.string_agg(ro.rolname, ',' ORDER BY ro.rolname)
                                        FROM pg_catalog.pg_roles ro WHERE ro.oid = ANY (pol.polroles)) END
           || ' using=' || coalesce(pg_catalog.pg_get_expr(pol.polqual, pol.polrelid), '')
           || ' check=' || coalesce(pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid), '')
      FROM rels r
      JOIN pg_catalog.pg_policy pol ON pol.polrelid = r.oid
    UNION ALL
    -- User triggers (the internal ones implement foreign keys and are named by OID).
    SELECT 'trigger ' || r.qname || '.' || pg_catalog.quote_ident(t.tgname)
           || ': ' || pg_catalog.pg_get_triggerdef(t.oid, true) || ' enabled=' || t.tgenabled::text
      FROM rels r
      JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    UNION ALL
    -- Foreign-key triggers, by constraint and function: which of them are enabled.
    SELECT 'fk trigger ' || r.qname || ' ' || pg_catalog.quote_ident(c.conname)
           || ': ' || t.tgfoid::pg_catalog.regproc::text || ' enabled=' || t.tgenabled::text
      FROM rels r
      JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.oid AND t.tgisinternal
      JOIN pg_catalog.pg_constraint c ON c.oid = t.tgconstraint
    UNION ALL
    -- Rules other than a view's own (views are compared by definition below).
    SELECT 'rule ' || r.qname || '.' || pg_catalog.quote_ident(rw.rulename)
           || ': ' || pg_catalog.pg_get_ruledef(rw.oid, true)
      FROM rels r
      JOIN pg_catalog.pg_rewrite rw ON rw.ev_class = r.oid AND rw.rulename <> '_RETURN'
    UNION ALL
    SELECT 'statistics ' || r.qname || '.' || pg_catalog.quote_ident(s.stxname)
           || ': ' || pg_catalog.pg_get_statisticsobjdef(s.oid)
      FROM rels r
      JOIN pg_catalog.pg_statistic_ext s ON s.stxrelid = r.oid
    UNION ALL
    -- Views, line by line.
    SELECT 'view ' || r.qname || ' definition ' || pg_catalog.lpad(d.n::text, 3, '0') || ': ' || d.l
      FROM rels r,
           pg_catalog.regexp_split_to_table(pg_catalog.pg_get_viewdef(r.oid, true), E'\n')
               WITH ORDINALITY AS d(l, n)
     WHERE r.relkind IN ('v', 'm')
    UNION ALL
    -- Sequences (their current values are data, not schema) and what owns them.
    SELECT 'sequence ' || r.qname || ': type=' || pg_catalog.format_type(s.seqtypid, NULL)
           || ' start=' || s.seqstart || ' increment=' || s.seqincrement
           || ' min=' || s.seqmin || ' max=' || s.seqmax || ' cache=' || s.seqcache
           || ' cycle=' || s.seqcycle
           || ' owned_by=' || coalesce(
                  (SELECT pg_catalog.string_agg(pg_catalog.pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid)
                                                || ' (' || d.deptype::text || ')', ', ')
                     FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = r.oid
                      AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                      AND d.deptype IN ('a', 'i')), '')
      FROM rels r
      JOIN pg_catalog.pg_sequence s ON s.seqrelid = r.oid
    UNION ALL
    -- Functions: attributes, then the whole definition line by line (language, body,
    -- volatility, strictness, parallel safety, SECURITY DEFINER, SET options, cost).
    SELECT 'function ' || p.signature || ': kind=' || p.prokind::text
           || ' secdef=' || p.prosecdef || ' volatile=' || p.provolatile::text
           || ' config=' || coalesce(p.proconfig::text, '')
           || ' owner=' || pg_catalog.pg_get_userbyid(p.proowner)
           || ' acl=' || coalesce(
                  (SELECT '{' || pg_catalog.string_agg(a::text, ',' ORDER BY a::text) || '}'
                     FROM unnest(p.proacl) a), 'default')
      FROM procs p
    UNION ALL
    SELECT 'function ' || p.signature || ' definition ' || pg_catalog.lpad(d.n::text, 3, '0') || ': ' || d.l
      FROM procs p,
           pg_catalog.regexp_split_to_table(pg_catalog.pg_get_functiondef(p.oid), E'\n')
               WITH ORDINALITY AS d(l, n)
     WHERE p.prokind IN ('f', 'p')
    UNION ALL
    -- Comments on members and on their columns.
    SELECT 'comment ' || pg_catalog.pg_describe_object(ds.classoid, ds.objoid, ds.objsubid)
           || ': ' || pg_catalog.replace(ds.description, E'\n', '\n')
      FROM pg_catalog.pg_description ds
      JOIN members m ON m.classid = ds.classoid AND m.objid = ds.objoid
    UNION ALL
    -- Initial privileges recorded for the extension's objects and their columns.
    SELECT 'init_privs ' || pg_catalog.pg_describe_object(ip.classoid, ip.objoid, ip.objsubid)
           || ': type=' || ip.privtype::text
           || ' acl=' || coalesce(
                  (SELECT '{' || pg_catalog.string_agg(a::text, ',' ORDER BY a::text) || '}'
                     FROM unnest(ip.initprivs) a), '')
      FROM pg_catalog.pg_init_privs ip
      JOIN members m ON m.classid = ip.classoid AND m.objid = ip.objoid
)
SELECT coalesce(line, '(a property that came out NULL)') FROM lines ORDER BY line COLLATE "C";
