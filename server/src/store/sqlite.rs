//! The embedded backend: one SQLite file in WAL mode.
//!
//! One table holds the log: a row per write, keyed by revision. Compaction deletes rows
//! that later rows superseded and deletions older than the history kept, so under churn
//! the file stops growing once freed pages are reused; the WAL is truncated back to a
//! fixed limit after each checkpoint. `synchronous=FULL` makes each commit durable against
//! power loss as well as a crash, and group commit (one transaction for every write
//! waiting) pays that fsync once per batch rather than once per write.

use super::{Backend, BackendError, Loaded, Revision, Row};
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// The WAL is truncated to this size after checkpoints.
const WAL_LIMIT_BYTES: i64 = 8 * 1024 * 1024;

/// The SQLite backend.
pub struct Sqlite {
    conn: Connection,
}

impl Sqlite {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Sqlite, BackendError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)?;
        conn.pragma_update(None, "wal_autocheckpoint", 1000)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (
                revision INTEGER PRIMARY KEY,
                key TEXT NOT NULL,
                value BLOB NOT NULL,
                create_revision INTEGER NOT NULL,
                prev_revision INTEGER NOT NULL,
                deleted INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS meta (
                name TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            );",
        )?;
        Ok(Sqlite { conn })
    }

    /// Leaves in the files nothing but the live database: old values survive in pages
    /// SQLite freed or reused in part, and in the WAL, so the file is rebuilt from what
    /// is live (VACUUM) and the WAL emptied. Costs a copy of the database.
    pub fn scrub(&mut self) -> Result<(), BackendError> {
        self.conn.execute_batch("VACUUM")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn meta(&self, name: &str) -> Result<Revision, BackendError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0))
    }
}

impl Backend for Sqlite {
    fn load(&mut self) -> Result<Loaded, BackendError> {
        let compacted = self.meta("compacted")?;
        let revision = self.meta("revision")?;
        let mut stmt = self.conn.prepare(
            "SELECT revision, key, value, create_revision, prev_revision, deleted
             FROM log ORDER BY revision",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Row {
                    revision: r.get(0)?,
                    key: r.get::<_, String>(1)?.into(),
                    value: r.get::<_, Vec<u8>>(2)?.into(),
                    create_revision: r.get(3)?,
                    prev_revision: r.get(4)?,
                    deleted: r.get::<_, i64>(5)? != 0,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Loaded {
            rows,
            compacted,
            revision,
        })
    }

    fn commit(&mut self, rows: &[Row]) -> Result<(), BackendError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO log (revision, key, value, create_revision, prev_revision, deleted)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for row in rows {
                insert.execute(params![
                    row.revision,
                    &*row.key,
                    &row.value[..],
                    row.create_revision,
                    row.prev_revision,
                    row.deleted as i64
                ])?;
            }
            if let Some(last) = rows.last() {
                tx.prepare_cached(
                    "INSERT INTO meta (name, value) VALUES ('revision', ?1)
                     ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                )?
                .execute([last.revision])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn compact(&mut self, revision: Revision) -> Result<(), BackendError> {
        let since = self.meta("compacted")?;
        let tx = self.conn.transaction()?;
        // A row at or before the compaction point that has a successor also at or before
        // it is history nobody can ask for any more. Every such row is the `prev` of a row
        // in (since, revision], so only the rows written since the last compaction are read.
        let superseded = tx.execute(
            "DELETE FROM log WHERE revision IN (
                SELECT prev_revision FROM log
                WHERE revision > ?1 AND revision <= ?2 AND prev_revision > 0)",
            params![since, revision],
        )?;
        let deletions = tx.execute(
            "DELETE FROM log WHERE deleted = 1 AND revision <= ?1",
            [revision],
        )?;
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ('compacted', ?1)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            [revision],
        )?;
        tx.commit()?;
        // Hand the WAL's pages back to the main file and cut it to its limit.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        tracing::debug!(revision, superseded, deletions, "datastore compacted");
        Ok(())
    }

    fn rewrite(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&Row) -> Result<Option<Bytes>, BackendError>,
    ) -> Result<usize, BackendError> {
        let tx = self.conn.transaction()?;
        let rows = {
            let mut stmt = tx.prepare(
                "SELECT revision, key, value, create_revision, prev_revision, deleted
                 FROM log WHERE substr(key, 1, length(?1)) = ?1 ORDER BY revision",
            )?;
            let rows = stmt
                .query_map([prefix], |r| {
                    Ok(Row {
                        revision: r.get(0)?,
                        key: r.get::<_, String>(1)?.into(),
                        value: r.get::<_, Vec<u8>>(2)?.into(),
                        create_revision: r.get(3)?,
                        prev_revision: r.get(4)?,
                        deleted: r.get::<_, i64>(5)? != 0,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows
        };
        let mut changed = 0;
        {
            let mut update = tx.prepare("UPDATE log SET value = ?1 WHERE revision = ?2")?;
            for row in &rows {
                if let Some(value) = f(row)? {
                    update.execute(params![&value[..], row.revision])?;
                    changed += 1;
                }
            }
        }
        tx.commit()?;
        if changed > 0 {
            self.scrub()?;
        }
        tracing::debug!(prefix, changed, "datastore rows rewritten");
        Ok(changed)
    }
}
