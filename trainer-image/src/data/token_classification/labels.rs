//! The label <-> id mapping: the pad label (`O`) is id 0, the other labels
//! follow in sorted order (NeMo builds it from the training labels the same
//! way and saves it as `label_ids.csv`, one label per line in id order).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::super::DataError;
use super::super::error::{numbered_lines, read_text};

/// Label names by id, with the reverse lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelIds {
    names: Vec<String>,
    ids: HashMap<String, usize>,
}

impl LabelIds {
    /// From names in id order (the first is the pad label); repeated names are an error.
    pub fn from_names(names: Vec<String>) -> Result<Self, DataError> {
        let mut ids = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || n.chars().any(char::is_whitespace) {
                return Err(DataError::Config(format!(
                    "label {n:?} (id {i}) is empty or holds white space"
                )));
            }
            if ids.insert(n.clone(), i).is_some() {
                return Err(DataError::Config(format!(
                    "label {n:?} is listed twice in label_ids"
                )));
            }
        }
        if names.is_empty() {
            return Err(DataError::Config("label_ids is empty".into()));
        }
        Ok(Self { names, ids })
    }

    /// From training labels: `pad_label` first, then every other label sorted.
    pub fn from_training_labels<'a>(
        labels: impl IntoIterator<Item = &'a str>,
        pad_label: &str,
    ) -> Result<Self, DataError> {
        let mut set: BTreeSet<&str> = labels.into_iter().collect();
        set.remove(pad_label);
        let names = std::iter::once(pad_label.to_string())
            .chain(set.into_iter().map(str::to_string))
            .collect();
        Self::from_names(names)
    }

    /// Reads `label_ids.csv` (one label per line, line order = id).
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let text = read_text(path)?;
        let mut names = Vec::new();
        for (line, l) in numbered_lines(&text) {
            let name = l.trim();
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Err(DataError::line(
                    path,
                    line,
                    format!("expected one label per line, found {l:?}"),
                ));
            }
            names.push(name.to_string());
        }
        Self::from_names(names).map_err(|e| DataError::file(path, e.to_string()))
    }

    /// Writes `label_ids.csv`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut s = self.names.join("\n");
        s.push('\n');
        std::fs::write(path, s)
    }

    /// The id of a label.
    pub fn id(&self, label: &str) -> Option<usize> {
        self.ids.get(label).copied()
    }
    /// The name of an id.
    pub fn name(&self, id: usize) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }
    /// All names in id order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
    /// Number of labels.
    pub fn len(&self) -> usize {
        self.names.len()
    }
    /// Never true (an empty mapping is refused); for clippy.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}
