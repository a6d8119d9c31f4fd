//! Deleting old checkpoint sets: keep the newest `keepLast` complete sets and
//! the top-k best ones, drop the rest (manifest first, so readers stop
//! trusting a set before its files go), and the leftovers of failed commits
//! older than the newest complete set. Runs only after a new manifest exists.

use std::collections::{BTreeMap, BTreeSet};

use crate::storage::{CheckpointSets, MANIFEST_NAME, StorageError, Store};

/// What a retention pass deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Complete sets removed.
    pub sets: Vec<String>,
    /// Incomplete sets (failed commits) removed.
    pub incomplete: Vec<String>,
}

/// Names of the complete sets to delete: all but the newest `keep_last` and
/// those in `best`. `complete` is sorted oldest first.
pub fn plan(complete: &[String], keep_last: usize, best: &BTreeSet<String>) -> Vec<String> {
    let newest = complete.len().saturating_sub(keep_last);
    complete[..newest]
        .iter()
        .filter(|n| !best.contains(*n))
        .cloned()
        .collect()
}

/// Applies [`plan`] to the sets in `store`, and removes incomplete sets older
/// than the newest complete one.
pub async fn apply(
    store: &Store,
    keep_last: usize,
    best: &BTreeSet<String>,
) -> Result<Removed, StorageError> {
    let sets = CheckpointSets::new(store.clone());
    let complete: Vec<String> = sets
        .list_complete()
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let mut objects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in store.list("").await? {
        if let Some((set, _)) = o.key.split_once('/')
            && is_set_name(set)
        {
            objects.entry(set.to_string()).or_default().push(o.key);
        }
    }
    let mut removed = Removed::default();
    for name in plan(&complete, keep_last, best) {
        store.delete(&format!("{name}/{MANIFEST_NAME}")).await?;
        for key in objects.get(&name).into_iter().flatten() {
            delete_quiet(store, key).await?;
        }
        removed.sets.push(name);
    }
    if let Some(newest) = complete.last() {
        let done: BTreeSet<&String> = complete.iter().collect();
        for (name, keys) in &objects {
            if name < newest && !done.contains(name) {
                for key in keys {
                    delete_quiet(store, key).await?;
                }
                removed.incomplete.push(name.clone());
            }
        }
    }
    Ok(removed)
}

/// Deletes `key`, treating "already gone" as done.
async fn delete_quiet(store: &Store, key: &str) -> Result<(), StorageError> {
    match store.delete(key).await {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// `step-` followed by 12 digits (see [`CheckpointSets::set_name`]).
pub fn is_set_name(name: &str) -> bool {
    name.strip_prefix("step-")
        .is_some_and(|d| d.len() == 12 && d.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_keeps_newest_and_best() {
        let names: Vec<String> = (1..=5).map(CheckpointSets::set_name).collect();
        let best: BTreeSet<String> = [CheckpointSets::set_name(1)].into();
        assert_eq!(
            plan(&names, 2, &best),
            vec![CheckpointSets::set_name(2), CheckpointSets::set_name(3)]
        );
        assert_eq!(plan(&names, 0, &best).len(), 4);
        assert!(plan(&names, 9, &BTreeSet::new()).is_empty());
        assert!(is_set_name("step-000000000005") && !is_set_name("step-5"));
    }
}
