//! [`Tables`] in memory, for unit tests of the assignment logic.

use std::collections::BTreeMap;

use super::*;
use crate::model::{InstanceRecord, OutboxRecord, RejectRecord, ReviewInventory, StudyRecord};

#[derive(Default)]
pub struct MemTables {
    pub studies: BTreeMap<String, StudyRecord>,
    pub series: BTreeMap<String, Vec<SeriesRecord>>,
    pub assignments: BTreeMap<(String, String), AssignmentRecord>,
    pub transfers: BTreeMap<String, TransferRecord>,
    pub participants: BTreeMap<(String, String), ParticipantRecord>,
    pub coupling: BTreeMap<(KeyKind, String, String), CouplingEntry>,
    pub auto_ids: BTreeMap<(String, String), String>,
    pub issued: BTreeMap<String, (String, String)>,
    pub audit: Vec<AuditRecord>,
    /// Study key -> instance keys.
    pub instances: BTreeMap<String, Vec<String>>,
    pub transfer_instances: BTreeMap<String, Vec<String>>,
    pub accounts: BTreeMap<String, crate::model::AccountRecord>,
    pub review: BTreeMap<String, ReviewInventory>,
    pub review_values: BTreeMap<(String, String), Vec<u64>>,
    /// Transfer -> project.
    pub review_counted: BTreeMap<String, String>,
}

impl Tables for MemTables {
    fn put_study(&mut self, s: &StudyRecord) -> Result<(), StoreError> {
        self.studies.insert(s.key.clone(), s.clone());
        Ok(())
    }
    fn remove_instances_of(&mut self, study_key: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        self.series.remove(study_key);
        let keys = self.instances.remove(study_key).unwrap_or_default();
        Ok(keys
            .into_iter()
            .map(|key| InstanceRecord {
                key,
                study_key: study_key.to_string(),
                file: String::new(),
                bytes: 0,
                transfer_syntax: String::new(),
                received_ms: 0,
                origin: Default::default(),
                sop_class_uid: String::new(),
                sop_instance_uid: String::new(),
                study_instance_uid: String::new(),
                series_instance_uid: String::new(),
            })
            .collect())
    }
    fn remove_transfer_instances(&mut self, transfer: &str) -> Result<(), StoreError> {
        self.transfer_instances.remove(transfer);
        Ok(())
    }
    fn rejection(&self, _key: &str) -> Result<Option<RejectRecord>, StoreError> {
        Ok(None)
    }
    fn put_rejection(&mut self, _r: &RejectRecord) -> Result<(), StoreError> {
        Ok(())
    }
    fn put_outbox(&mut self, _r: &OutboxRecord) -> Result<(), StoreError> {
        Ok(())
    }
    fn remove_outbox(&mut self, _id: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    fn outbox_entry(&self, _id: &str) -> Result<Option<OutboxRecord>, StoreError> {
        Ok(None)
    }
    fn account(&self, name: &str) -> Result<Option<crate::model::AccountRecord>, StoreError> {
        Ok(self.accounts.get(name).cloned())
    }
    fn put_account(&mut self, a: &crate::model::AccountRecord) -> Result<(), StoreError> {
        self.accounts.insert(a.name.clone(), a.clone());
        Ok(())
    }
    fn instance_keys_of(&self, study_key: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.instances.get(study_key).cloned().unwrap_or_default())
    }
    fn add_transfer_instances(
        &mut self,
        transfer: &str,
        keys: &[String],
    ) -> Result<(), StoreError> {
        let v = self
            .transfer_instances
            .entry(transfer.to_string())
            .or_default();
        for k in keys {
            if !v.contains(k) {
                v.push(k.clone());
            }
        }
        Ok(())
    }
    fn all_assignments(&self) -> Result<Vec<AssignmentRecord>, StoreError> {
        Ok(self.assignments.values().cloned().collect())
    }
    fn study(&self, key: &str) -> Result<Option<StudyRecord>, StoreError> {
        Ok(self.studies.get(key).cloned())
    }
    fn all_studies(&self) -> Result<Vec<StudyRecord>, StoreError> {
        Ok(self.studies.values().cloned().collect())
    }
    fn study_key_by_uid(&self, uid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .studies
            .values()
            .find(|s| s.study_instance_uid == uid)
            .map(|s| s.key.clone()))
    }
    fn series_of(&self, study_key: &str) -> Result<Vec<SeriesRecord>, StoreError> {
        Ok(self.series.get(study_key).cloned().unwrap_or_default())
    }
    fn assignments_of(&self, study_key: &str) -> Result<Vec<AssignmentRecord>, StoreError> {
        Ok(self
            .assignments
            .iter()
            .filter(|((s, _), _)| s == study_key)
            .map(|(_, a)| a.clone())
            .collect())
    }
    fn put_assignment(&mut self, a: &AssignmentRecord) -> Result<(), StoreError> {
        self.assignments
            .insert((a.study_key.clone(), a.project.clone()), a.clone());
        Ok(())
    }
    fn transfer(&self, id: &str) -> Result<Option<TransferRecord>, StoreError> {
        Ok(self.transfers.get(id).cloned())
    }
    fn put_transfer(&mut self, t: &TransferRecord) -> Result<(), StoreError> {
        self.transfers.insert(t.id.clone(), t.clone());
        Ok(())
    }
    fn participant(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Option<ParticipantRecord>, StoreError> {
        Ok(self
            .participants
            .get(&(project.to_string(), id.to_string()))
            .cloned())
    }
    fn put_participant(&mut self, p: &ParticipantRecord) -> Result<(), StoreError> {
        self.participants
            .insert((p.project.clone(), p.participant.clone()), p.clone());
        Ok(())
    }
    fn coupling(&self, kind: KeyKind, key: &str) -> Result<Vec<CouplingEntry>, StoreError> {
        Ok(self
            .coupling
            .iter()
            .filter(|((k, v, _), _)| *k == kind && v == key)
            .map(|(_, e)| e.clone())
            .collect())
    }
    fn put_coupling(&mut self, e: &CouplingEntry) -> Result<(), StoreError> {
        self.coupling
            .insert((e.kind, e.key.clone(), e.project.clone()), e.clone());
        Ok(())
    }
    fn auto_id(&self, project: &str, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .auto_ids
            .get(&(project.to_string(), hash.to_string()))
            .cloned())
    }
    fn put_auto_id(&mut self, project: &str, hash: &str, id: &str) -> Result<(), StoreError> {
        self.auto_ids
            .insert((project.to_string(), hash.to_string()), id.to_string());
        Ok(())
    }
    fn issued_study(&self, uid: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(self.issued.get(uid).cloned())
    }
    fn put_issued_study(
        &mut self,
        uid: &str,
        study_key: &str,
        project: &str,
    ) -> Result<(), StoreError> {
        self.issued.insert(
            uid.to_string(),
            (study_key.to_string(), project.to_string()),
        );
        Ok(())
    }
    fn append_audit(&mut self, mut a: AuditRecord) -> Result<u64, StoreError> {
        a.seq = self.audit.len() as u64 + 1;
        self.audit.push(a);
        Ok(self.audit.len() as u64)
    }
    fn review(&self, project: &str) -> Result<Option<ReviewInventory>, StoreError> {
        Ok(self.review.get(project).cloned())
    }
    fn put_review(&mut self, r: &ReviewInventory) -> Result<(), StoreError> {
        self.review.insert(r.project.clone(), r.clone());
        Ok(())
    }
    fn review_values(&self, project: &str, path: &str) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .review_values
            .get(&(project.to_string(), path.to_string()))
            .cloned()
            .unwrap_or_default())
    }
    fn put_review_values(
        &mut self,
        project: &str,
        path: &str,
        hashes: &[u64],
    ) -> Result<(), StoreError> {
        self.review_values
            .insert((project.to_string(), path.to_string()), hashes.to_vec());
        Ok(())
    }
    fn review_counted(&self, transfer: &str) -> Result<bool, StoreError> {
        Ok(self.review_counted.contains_key(transfer))
    }
    fn put_review_counted(&mut self, transfer: &str, project: &str) -> Result<(), StoreError> {
        self.review_counted
            .insert(transfer.to_string(), project.to_string());
        Ok(())
    }
}
