//! Re-queueing finished transfers (`fiona resend`): outputs still as recorded are sent
//! again; otherwise the study is de-identified again.

use std::collections::BTreeMap;
use std::path::Path;

use super::transfer_audit;
use crate::deid::outbound;
use crate::index::Store;
use crate::model::{TransferRecord, TransferState};

/// Re-queue transfers that were sent, verified, failed or parked (e.g. after the research
/// PACS lost data, or the project's settings changed): those of `study`, or of `project`
/// created at or after `since_ms`. A parked transfer has no outputs, so it is de-identified
/// again. A transfer whose
/// outputs are still in the outbound area is sent again (every destination, every instance;
/// the PACS keeps one copy per SOP Instance UID); one whose outputs are gone is de-identified
/// again first (same bytes: the engine is deterministic). Returns the transfer IDs.
// The selection (study, project, since), who and when, and the job's progress: a struct for
// them would be built at its one call site only.
#[allow(clippy::too_many_arguments)]
pub fn resend(
    store: &dyn Store,
    data_dir: &Path,
    study: Option<&str>,
    project: Option<&str>,
    since_ms: Option<i64>,
    actor: &str,
    now: i64,
    progress: &crate::jobs::Progress,
) -> Result<Vec<String>, String> {
    // Which transfers still have their outputs as recorded: read before the write
    // transaction (it would hold up receiving while files are opened). Every outbound file
    // is opened, so at project scale this is the long part: `progress` counts the transfers
    // looked at.
    let wanted = |t: &TransferRecord| {
        study.is_none_or(|s| s == t.study_key)
            && project.is_none_or(|p| p == t.project)
            && since_ms.is_none_or(|s| t.created_ms >= s)
            && matches!(
                t.state,
                TransferState::Sent
                    | TransferState::Verified
                    | TransferState::Failed
                    | TransferState::Parked
            )
    };
    let candidates: Vec<TransferRecord> = store
        .transfers()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|t| wanted(t))
        .collect();
    progress.set_total(candidates.len() as u64);
    let complete: BTreeMap<String, u64> = candidates
        .into_iter()
        .filter(|t| {
            let ok = t.deidentified > 0 && outbound::released(data_dir, t).is_ok();
            progress.advance();
            ok
        })
        .map(|t| (t.id, t.deidentified))
        .collect();
    let mut ids = Vec::new();
    store
        .write_assign(&mut |tables| {
            ids.clear();
            let candidates: Vec<TransferRecord> = tables
                .all_assignments()?
                .iter()
                .flat_map(|a| a.transfers.clone())
                .filter_map(|id| tables.transfer(&id).ok().flatten())
                .collect();
            for mut t in candidates {
                if !wanted(&t) || ids.contains(&t.id) {
                    continue;
                }
                // Evicted: nothing left to send or to de-identify (the study must come again
                // from the PACS; its assignments apply then).
                if tables.study(&t.study_key)?.is_some_and(|s| s.is_evicted()) {
                    continue;
                }
                // Outputs as recorded are sent again; otherwise the study is de-identified
                // again (deterministic: the same UIDs and values).
                let have = complete.get(&t.id) == Some(&t.deidentified);
                t.move_to(
                    if have {
                        TransferState::Deidentified
                    } else {
                        TransferState::Requested
                    },
                    now,
                )?;
                t.reason = None;
                t.sent = 0;
                t.verified_ms = None;
                t.deliveries.clear();
                t.deid_attempts = 0;
                t.next_deid_ms = 0;
                tables.put_transfer(&t)?;
                tables.append_audit(transfer_audit(
                    &t,
                    actor,
                    "resend",
                    format!("re-queued as {}", t.state.as_str()),
                    now,
                ))?;
                ids.push(t.id.clone());
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(ids)
}
