//! Relation extraction as NeMo's BioMegatron tutorial does it (ChemProt):
//! sentence classification over entity-marked text. `{train,dev,test}.tsv`
//! are text classification files (`sentence<TAB>label_id`, header
//! `sentence\tlabel`) whose sentences carry the entity markers (`@CHEMICAL$`,
//! `@GENE$`), and `label_mapping.tsv` maps relation names to ids, one
//! `name<TAB>id` per line (`CPR:3\t0`, ..., `false\t5`).

use std::path::Path;

use super::DataError;
use super::error::{numbered_lines, read_text};
use super::text_classification::{TextExample, read_text_classification};

/// ChemProt's entity markers.
pub const CHEMPROT_MARKERS: [&str; 2] = ["@CHEMICAL$", "@GENE$"];

/// Relation names by id, from `label_mapping.tsv`; ids must be exactly `0..n`.
pub fn read_label_mapping(path: &Path) -> Result<Vec<String>, DataError> {
    let text = read_text(path)?;
    let mut pairs: Vec<(usize, String, usize)> = Vec::new();
    for (line, l) in numbered_lines(&text) {
        if l.trim().is_empty() {
            return Err(DataError::line(
                path,
                line,
                "empty line; expected `relation_name<TAB>id`",
            ));
        }
        let Some((name, id)) = l.rsplit_once('\t') else {
            return Err(DataError::line(
                path,
                line,
                "expected `relation_name<TAB>id`, found no TAB",
            ));
        };
        let id: usize = id.trim().parse().map_err(|_| {
            DataError::line(
                path,
                line,
                format!("id {id:?} is not a non-negative integer"),
            )
        })?;
        pairs.push((id, name.to_string(), line));
    }
    pairs.sort_by_key(|p| p.0);
    for (i, (id, name, line)) in pairs.iter().enumerate() {
        if *id != i {
            return Err(DataError::line(
                path,
                *line,
                format!(
                    "relation {name:?} has id {id}; ids must be 0..{} with each used once",
                    pairs.len()
                ),
            ));
        }
    }
    if pairs.is_empty() {
        return Err(DataError::file(path, "holds no relation"));
    }
    Ok(pairs.into_iter().map(|p| p.1).collect())
}

/// A relation extraction data set: examples and relation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationDataset {
    /// Entity-marked sentences with relation ids.
    pub examples: Vec<TextExample>,
    /// Relation name of each id.
    pub relation_names: Vec<String>,
    /// Examples lacking one of the checked markers (kept; reported so a
    /// wrongly converted file is noticed).
    pub without_markers: usize,
}

/// Reads a relation TSV with its label mapping; `markers` are counted per
/// sentence (pass [`CHEMPROT_MARKERS`] for ChemProt, `&[]` to skip).
pub fn read_relation_extraction(
    tsv: &Path,
    label_mapping: &Path,
    markers: &[&str],
    require_labels: bool,
) -> Result<RelationDataset, DataError> {
    let relation_names = read_label_mapping(label_mapping)?;
    let examples = read_text_classification(tsv, relation_names.len(), require_labels)?;
    let without_markers = examples
        .iter()
        .filter(|e| !markers.iter().all(|m| e.text.contains(m)))
        .count();
    Ok(RelationDataset {
        examples,
        relation_names,
        without_markers,
    })
}
