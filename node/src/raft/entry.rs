//! Raft entries as WAL records and back: the WAL is the log, so nothing is logged twice.
//!
//! Normal entries carry the leader's HLC and the encoded batch: the record is that HLC and payload.
//! Blank and membership entries become control records (`storage/batch.rs`: no data operations)
//! with HLC 0: body `0x00` (blank) or `0x01` + JSON of the membership.

use openraft::{CommittedLeaderId, EntryPayload, LogId};

use super::{Proposal, TypeConfig};
use crate::storage::batch;
use crate::wal::Record;

const BLANK: u8 = 0x00;
const MEMBERSHIP: u8 = 0x01;

pub type Entry = openraft::Entry<TypeConfig>;

/// The LSN of log index `index` (openraft counts from 0, the WAL from 1).
pub fn lsn_of(index: u64) -> u64 {
    index + 1
}

/// The log id of the record at `lsn` with epoch `epoch`.
pub fn log_id(epoch: u64, lsn: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(epoch, 0), lsn - 1)
}

/// Why a record is not a Raft entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("record LSN {lsn}: bad control payload: {reason}")]
    Control { lsn: u64, reason: String },
    #[error("entry {index}: membership does not encode: {0}", index = .1)]
    Encode(serde_json::Error, u64),
}

/// The WAL record of `entry`.
pub fn to_record(entry: &Entry) -> Result<Record, EntryError> {
    let lsn = lsn_of(entry.log_id.index);
    let epoch = entry.log_id.leader_id.term;
    let (hlc, payload) = match &entry.payload {
        EntryPayload::Normal(p) => (p.hlc, p.payload.clone()),
        EntryPayload::Blank => (0, batch::encode_control(&[BLANK])),
        EntryPayload::Membership(m) => {
            let mut body = vec![MEMBERSHIP];
            body.extend(
                serde_json::to_vec(m).map_err(|e| EntryError::Encode(e, entry.log_id.index))?,
            );
            (0, batch::encode_control(&body))
        }
    };
    Ok(Record {
        lsn,
        hlc,
        epoch,
        payload: payload.into(),
    })
}

/// The entry a WAL record holds.
pub fn from_record(rec: Record) -> Result<Entry, EntryError> {
    let log_id = log_id(rec.epoch, rec.lsn);
    let payload = match batch::control_body(&rec.payload) {
        None => EntryPayload::Normal(Proposal {
            hlc: rec.hlc,
            payload: rec.payload.to_vec(),
        }),
        Some([BLANK]) => EntryPayload::Blank,
        Some([MEMBERSHIP, json @ ..]) => {
            EntryPayload::Membership(serde_json::from_slice(json).map_err(|e| {
                EntryError::Control {
                    lsn: rec.lsn,
                    reason: e.to_string(),
                }
            })?)
        }
        Some(other) => {
            return Err(EntryError::Control {
                lsn: rec.lsn,
                reason: format!("unknown kind {:?}", other.first()),
            })
        }
    };
    Ok(Entry { log_id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::Membership;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn entries_round_trip_through_records() {
        let nodes: BTreeMap<u64, super::super::Member> =
            [(1, Default::default()), (2, Default::default())].into();
        let m = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
        let entries = vec![
            Entry {
                log_id: log_id(0, 1),
                payload: EntryPayload::Membership(m),
            },
            Entry {
                log_id: log_id(7, 2),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(7, 3),
                payload: EntryPayload::Normal(Proposal {
                    hlc: 99,
                    payload: batch::encode(&[]).unwrap(),
                }),
            },
        ];
        for e in entries {
            let rec = to_record(&e).unwrap();
            assert_eq!(
                (rec.lsn, rec.epoch),
                (e.log_id.index + 1, e.log_id.leader_id.term)
            );
            let back = from_record(rec).unwrap();
            assert_eq!(format!("{back:?}"), format!("{e:?}"));
        }
    }
}
