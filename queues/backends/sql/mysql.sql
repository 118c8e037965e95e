-- Queries of the mysql backend (queues/backends/mysql.py), for MariaDB 10.6+ and MySQL 8+.
-- {queue} and {dead} are backquoted identifiers made safe by sqlfiles.table_name; {ids} and
-- {values} are lists the backend builds from integers and hex literals only; %s are values
-- escaped by the driver.

-- name: session
-- READ COMMITTED: SKIP LOCKED then takes record locks only; under REPEATABLE READ its next-key
-- (gap) locks would block the producers' inserts. Lock waits are bounded so nothing hangs.
SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED;
SET SESSION innodb_lock_wait_timeout = 10, lock_wait_timeout = 10, group_concat_max_len = 1073741824;

-- name: create_queue
CREATE TABLE IF NOT EXISTS {queue} (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    body MEDIUMBLOB NOT NULL
) ENGINE = InnoDB;

-- name: create_dead
CREATE TABLE IF NOT EXISTS {dead} (
    id BIGINT UNSIGNED NOT NULL,
    body MEDIUMBLOB NOT NULL,
    dead_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB;

-- name: drop_tables
DROP TABLE IF EXISTS {queue}, {dead};

-- name: ready_ids
-- purge takes only ready rows: those claimed by a live consumer belong to its transaction.
SELECT id FROM {queue} FOR UPDATE SKIP LOCKED;

-- name: delete_ids
-- Not "WHERE id IN (...)": on a small table (a queue that keeps up) the optimizer reads the
-- whole table for that, and a locking full scan waits on rows other consumers hold: deadlocks.
-- Joining the id list first (STRAIGHT_JOIN) forces one primary-key lookup (eq_ref) per id.
DELETE q FROM JSON_TABLE('[{ids}]', '$[*]' COLUMNS (id BIGINT UNSIGNED PATH '$')) AS ids
    STRAIGHT_JOIN {queue} AS q ON q.id = ids.id;

-- name: dead_letters
SELECT body FROM {dead} ORDER BY dead_at, id;

-- name: depth
-- Claimed rows are deleted only when their consumer acks and commits: ready plus in flight.
SELECT COUNT(*) FROM {queue};

-- name: claim
-- Locks the rows in the consumer's open transaction (the locking read works inside the derived
-- table); they are deleted on ack. The batch comes back as one row: PyMySQL parses rows in
-- Python, and one row per message cost more than the rest of the consumer. COUNT and SUM let
-- the client check that GROUP_CONCAT did not truncate anything (group_concat_max_len).
SELECT COUNT(*), SUM(LENGTH(body)), GROUP_CONCAT(id ORDER BY id), GROUP_CONCAT(HEX(body) ORDER BY id)
FROM (SELECT id, body FROM {queue} ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) AS claimed;

-- name: claim_more
-- SKIP LOCKED skips only other transactions' locks: a consumer that claims again before
-- settling must leave out the rows it already holds.
SELECT COUNT(*), SUM(LENGTH(body)), GROUP_CONCAT(id ORDER BY id), GROUP_CONCAT(HEX(body) ORDER BY id)
FROM (SELECT id, body FROM {queue} WHERE id NOT IN ({ids}) ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) AS claimed;

-- name: dead_letter
INSERT INTO {dead} (id, body)
    SELECT q.id, q.body FROM JSON_TABLE('[{ids}]', '$[*]' COLUMNS (id BIGINT UNSIGNED PATH '$')) AS ids
    STRAIGHT_JOIN {queue} AS q ON q.id = ids.id;

-- name: insert_values
INSERT INTO {queue} (body) VALUES {values};

-- name: environment
SELECT VERSION() AS server_version,
       @@innodb_flush_log_at_trx_commit AS innodb_flush_log_at_trx_commit,
       @@sync_binlog AS sync_binlog,
       @@log_bin AS log_bin,
       @@innodb_doublewrite AS innodb_doublewrite;

-- name: list_objects
-- Tables whose name starts with a prefix: the queues cleanup may remove.
SELECT table_name FROM information_schema.tables
WHERE table_schema = DATABASE() AND LEFT(table_name, CHAR_LENGTH(%s)) = %s;

-- name: count_objects
SELECT COUNT(*) FROM information_schema.tables
WHERE table_schema = DATABASE() AND LEFT(table_name, CHAR_LENGTH(%s)) = %s;

-- name: sessions_on_table
-- Sessions running a statement that names a queue's table (its workers' claims and inserts),
-- opened before the asking one (ids only grow: a worker's reconnection after the cut is
-- spared), other than the asking session and the runner's control connection.
SELECT id FROM information_schema.processlist
WHERE id < CONNECTION_ID() AND id <> %s AND LOCATE(%s, info) > 0;
