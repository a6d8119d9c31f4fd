//! [`SplitFiles`]: the local data files of each split.

use std::path::{Path, PathBuf};

use crds::Split;

/// Local paths of the data files (the caller downloads `s3://` inputs first).
/// `*_labels` are the token classification labels files; other tasks carry
/// their labels inside the data file and leave them unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitFiles {
    /// Training data.
    pub train: Option<PathBuf>,
    /// Validation data.
    pub validation: Option<PathBuf>,
    /// Test data.
    pub test: Option<PathBuf>,
    /// Labels of `train` (token classification).
    pub train_labels: Option<PathBuf>,
    /// Labels of `validation` (token classification).
    pub validation_labels: Option<PathBuf>,
    /// Labels of `test` (token classification).
    pub test_labels: Option<PathBuf>,
}

impl SplitFiles {
    /// The data file of a split.
    pub fn data(&self, split: Split) -> Option<&Path> {
        match split {
            Split::Train => self.train.as_deref(),
            Split::Validation => self.validation.as_deref(),
            Split::Test => self.test.as_deref(),
        }
    }

    /// The labels file of a split.
    pub fn labels(&self, split: Split) -> Option<&Path> {
        match split {
            Split::Train => self.train_labels.as_deref(),
            Split::Validation => self.validation_labels.as_deref(),
            Split::Test => self.test_labels.as_deref(),
        }
    }
}

/// The prefix of a split's metric names: `train`, `val` or `test`.
pub fn metric_prefix(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Validation => "val",
        Split::Test => "test",
    }
}

/// The split's name in messages (`spec.data.<name>`).
pub fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Validation => "validation",
        Split::Test => "test",
    }
}

/// One value per split.
#[derive(Debug, Clone)]
pub(crate) struct Splits<T> {
    pub train: Option<T>,
    pub validation: Option<T>,
    pub test: Option<T>,
}

impl<T> Default for Splits<T> {
    fn default() -> Self {
        Self {
            train: None,
            validation: None,
            test: None,
        }
    }
}

impl<T> Splits<T> {
    /// Builds each split whose data file is set.
    pub fn load<E>(
        files: &SplitFiles,
        mut f: impl FnMut(Split, &Path) -> Result<T, E>,
    ) -> Result<Self, E> {
        let mut one = |split| files.data(split).map(|p| f(split, p)).transpose();
        Ok(Self {
            train: one(Split::Train)?,
            validation: one(Split::Validation)?,
            test: one(Split::Test)?,
        })
    }

    /// The value of a split.
    pub fn get(&self, split: Split) -> Option<&T> {
        match split {
            Split::Train => self.train.as_ref(),
            Split::Validation => self.validation.as_ref(),
            Split::Test => self.test.as_ref(),
        }
    }

    /// The value of a split, or an error saying the split has no data.
    pub fn require(&self, split: Split) -> crate::train::TrainResult<&T> {
        self.get(split).ok_or_else(|| {
            crate::train::TrainError::InvalidInput(format!(
                "there is no {} split: set spec.data.{}",
                split_name(split),
                split_name(split)
            ))
        })
    }
}
