-- The monitor's durable state. See monitor/src/store/mod.rs for why each
-- piece is stored. Never edit this file once landed: add a new migration.

CREATE TABLE formation (
    name                 text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    -- Fixed by the first node that registers; later nodes must agree.
    dbname               text NOT NULL DEFAULT 'postgres',
    -- k of ANY k (...) is max(1, number_sync_standbys).
    number_sync_standbys integer NOT NULL DEFAULT 0 CHECK (number_sync_standbys >= 0),
    created_at           timestamptz NOT NULL DEFAULT now()
);

INSERT INTO formation (name) VALUES ('default');

-- One row per replication group. Every decision locks this row first, so
-- all decisions about one group are serialized.
CREATE TABLE node_group (
    formation         text NOT NULL REFERENCES formation (name) ON DELETE CASCADE,
    group_id          integer NOT NULL CHECK (group_id >= 0),
    -- Fencing token: bumped in the same transaction as every promotion
    -- decision; keepers ignore goals from an older generation.
    generation        bigint NOT NULL DEFAULT 1 CHECK (generation >= 1),
    -- Set by the first node that knows its PGDATA; every node of the group
    -- must match it. Stored as the bit pattern of the u64 in a bigint.
    system_identifier bigint,
    PRIMARY KEY (formation, group_id)
);

CREATE TABLE node (
    node_id                 bigserial PRIMARY KEY,
    formation               text NOT NULL,
    group_id                integer NOT NULL,
    name                    text NOT NULL CHECK (name <> ''),
    host                    text NOT NULL CHECK (host <> ''),
    port                    integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    system_identifier       bigint,
    reported_state          text NOT NULL,
    assigned_state          text NOT NULL,
    pg_running              boolean NOT NULL DEFAULT false,
    reported_tli            integer NOT NULL DEFAULT 0,
    -- u64 LSN bit pattern; refreshed with every write of the row (the live
    -- value between writes is kept in the monitor's memory).
    reported_lsn            bigint NOT NULL DEFAULT 0,
    replication_state       text NOT NULL DEFAULT '',
    upstream_silent_ms      bigint,
    candidate_priority      integer NOT NULL CHECK (candidate_priority BETWEEN 0 AND 100),
    replication_quorum      boolean NOT NULL,
    health                  text NOT NULL DEFAULT 'unknown' CHECK (health IN ('unknown', 'good', 'bad')),
    last_report             timestamptz,
    last_probe              timestamptz,
    goal_changed_at         timestamptz NOT NULL,
    replication_stall_since timestamptz,
    registered_at           timestamptz NOT NULL,
    UNIQUE (formation, name),
    UNIQUE (host, port),
    FOREIGN KEY (formation, group_id) REFERENCES node_group (formation, group_id)
) WITH (fillfactor = 50);  -- room for HOT updates of the hot columns

CREATE INDEX node_group_idx ON node (formation, group_id);

CREATE TABLE event (
    event_id       bigserial PRIMARY KEY,
    event_time     timestamptz NOT NULL,
    formation      text NOT NULL,
    group_id       integer NOT NULL,
    -- No foreign key: events outlive dropped nodes.
    node_id        bigint NOT NULL,
    node_name      text NOT NULL,
    reported_state text NOT NULL,
    assigned_state text NOT NULL,
    description    text NOT NULL
);

CREATE INDEX event_formation_idx ON event (formation, event_id DESC);
