//! The claim ledger: which job each worker is running, in one small file per worker
//! under the data directory (`pg_attribution/claim.<slot>`).
//!
//! A claim commits without waiting for its WAL flush, so a crash of the server can lose
//! it: the job is then `pending` again with its attempt unspent, and a job that crashes
//! the server every time would do so forever. The ledger closes that hole. A worker
//! writes the job it claims there before the claim commits (a plain write, no fsync: a
//! crash of the server leaves the operating system's page cache alone) and removes it
//! once the job's outcome is committed. After a restart, each worker reads its own file
//! and, if the claim it names did not survive (the job is `pending` with one attempt
//! fewer), spends that attempt as crash recovery would have (src/worker/jobs.rs,
//! recover_orphans). A claim that did survive is recovered as an orphan instead; the two
//! never both count it. A machine crash can lose both the claim and the file; no job
//! causes one of those.
//!
//! When the file cannot be written (a full disk, say), the worker flushes the claim's
//! WAL instead, as before the ledger existed.

use std::path::PathBuf;

/// Relative to the data directory, every backend's working directory.
const DIR: &str = "pg_attribution";

/// One claim as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The job table, or its shard under Citus, as the claim found it.
    pub table: String,
    pub tenant_id: String,
    pub id: String,
    /// The job's attempts including this claim.
    pub attempts: i32,
}

impl Entry {
    fn to_line(&self) -> String {
        format!("{}\t{}\t{}\t{}\n", self.table, self.tenant_id, self.id, self.attempts)
    }

    fn parse(text: &str) -> Option<Entry> {
        let line = text.strip_suffix('\n')?;
        let mut fields = line.split('\t');
        let entry = Entry {
            table: fields.next()?.to_owned(),
            tenant_id: fields.next()?.to_owned(),
            id: fields.next()?.to_owned(),
            attempts: fields.next()?.parse().ok()?,
        };
        let uuid = |s: &str| s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        (fields.next().is_none() && uuid(&entry.tenant_id) && uuid(&entry.id) && entry.attempts >= 1)
            .then_some(entry)
    }
}

fn path(slot: usize) -> PathBuf {
    PathBuf::from(DIR).join(format!("claim.{slot}"))
}

/// Records a claim. False when the file could not be written: the caller must then make
/// the claim durable itself.
pub fn record(slot: usize, entry: &Entry) -> bool {
    let line = entry.to_line();
    std::fs::write(path(slot), &line).is_ok()
        || (std::fs::create_dir_all(DIR).is_ok() && std::fs::write(path(slot), &line).is_ok())
}

/// Forgets the worker's claim: its outcome is committed.
pub fn clear(slot: usize) {
    let _ = std::fs::remove_file(path(slot));
}

/// The claim the worker had recorded when it last stopped, if any. A file that does not
/// parse (cut short by a machine crash) reads as none.
pub fn read(slot: usize) -> Option<Entry> {
    std::fs::read_to_string(path(slot)).ok().as_deref().and_then(Entry::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            table: "public.attribution_recompute_jobs".into(),
            tenant_id: "aaaaaaaa-0000-4000-8000-000000000001".into(),
            id: "0b7a6a4e-0d5c-4c41-9d55-0d6f7f1c2e3a".into(),
            attempts: 2,
        }
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        assert_eq!(Entry::parse(&entry().to_line()), Some(entry()));
    }

    #[test]
    fn a_damaged_entry_reads_as_none() {
        let line = entry().to_line();
        for bad in [
            "".to_owned(),
            line[..line.len() - 1].to_owned(),
            line[..20].to_owned(),
            line.replace("\t2\n", "\tx\n"),
            line.replace("\t2\n", "\t0\n"),
            line.replace("\t2\n", "\t2\textra\n"),
            line.replace("aaaaaaaa-", "aaaaaaaa'"),
        ] {
            assert_eq!(Entry::parse(&bad), None, "{bad:?}");
        }
    }
}
