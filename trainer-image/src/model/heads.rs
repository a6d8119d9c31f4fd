//! NeMo-shaped task heads and their losses.
//!
//! Every head is NeMo's `TokenClassifier`/`SequenceClassifier`: dropout on the
//! input hidden states, then a `MultiLayerPerceptron` whose linear layers are
//! `classifier.mlp.layer{0,2,4,..}` (odd indices are the activation), e.g. QA
//! `layer0` `[2, h]`; token/sequence classification `layer0` `[h, h]` +
//! activation + `layer2` `[C, h]`. Heads are replicated across
//! tensor-parallel ranks. Logits are raw (NeMo's optional `log_softmax` does
//! not change the cross-entropy losses below).

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor, nn};

use super::error::{ModelError, Result};

/// Activation between the head's linear layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadActivation {
    /// NeMo's default.
    #[default]
    Relu,
    Gelu,
    Tanh,
}

/// Which task head, and its shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    pub task: Task,
    /// Output classes (2 for span QA: start and end).
    pub num_classes: i64,
    /// Linear layers in the MLP (NeMo: QA 1, token and text classification 2).
    pub num_layers: i64,
    pub activation: HeadActivation,
    /// Dropout on the hidden states entering the head (NeMo `fc_dropout`).
    pub dropout: f64,
}

/// The downstream task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Span QA (SQuAD): start/end logits per token.
    QuestionAnswering,
    /// Per-token classes (NER, punctuation, ...).
    TokenClassification,
    /// One class per sequence from token 0 (text classification, relation extraction).
    SequenceClassification,
}

impl HeadConfig {
    /// NeMo's QA head: one linear layer to start/end logits, no dropout.
    pub fn question_answering() -> Self {
        Self {
            task: Task::QuestionAnswering,
            num_classes: 2,
            num_layers: 1,
            activation: HeadActivation::Relu,
            dropout: 0.0,
        }
    }

    /// NeMo's token classification head (`num_fc_layers 2`, `fc_dropout 0.5`, relu).
    pub fn token_classification(num_classes: i64) -> Self {
        Self {
            task: Task::TokenClassification,
            num_classes,
            num_layers: 2,
            activation: HeadActivation::Relu,
            dropout: 0.5,
        }
    }

    /// NeMo's text classification head (`num_output_layers 2`, `fc_dropout 0.1`, relu).
    pub fn sequence_classification(num_classes: i64) -> Self {
        Self {
            task: Task::SequenceClassification,
            num_classes,
            num_layers: 2,
            activation: HeadActivation::Relu,
            dropout: 0.1,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(ModelError::Config {
                field: field.into(),
                message,
            })
        };
        if self.num_layers < 1 {
            return bad(
                "head.num_layers",
                format!("must be at least 1, got {}", self.num_layers),
            );
        }
        if self.num_classes < 1 {
            return bad(
                "head.num_classes",
                format!("must be at least 1, got {}", self.num_classes),
            );
        }
        if self.task == Task::QuestionAnswering && self.num_classes != 2 {
            return bad(
                "head.num_classes",
                format!(
                    "span QA needs 2 classes (start, end), got {}",
                    self.num_classes
                ),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(
                "head.dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            );
        }
        Ok(())
    }
}

/// NeMo's `MultiLayerPerceptron` with input dropout, under `classifier.mlp`.
#[derive(Debug)]
pub struct ClassifierMlp {
    /// `layer0`, `layer2`, ...
    pub layers: Vec<nn::Linear>,
    activation: HeadActivation,
    dropout: f64,
}

impl ClassifierMlp {
    /// Creates the layers under `vs` (the `classifier` path) with NeMo's
    /// transformer init (Xavier-uniform weights, zero biases).
    pub fn new(vs: &nn::Path, hidden: i64, cfg: &HeadConfig) -> Result<Self> {
        cfg.validate()?;
        let mlp = vs / "mlp";
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let out = if i + 1 == cfg.num_layers {
                    cfg.num_classes
                } else {
                    hidden
                };
                let bound = (6.0 / (hidden + out) as f64).sqrt();
                nn::linear(
                    &mlp / format!("layer{}", 2 * i),
                    hidden,
                    out,
                    nn::LinearConfig {
                        ws_init: nn::Init::Uniform {
                            lo: -bound,
                            up: bound,
                        },
                        bs_init: Some(nn::Init::Const(0.0)),
                        bias: true,
                    },
                )
            })
            .collect();
        Ok(Self {
            layers,
            activation: cfg.activation,
            dropout: cfg.dropout,
        })
    }

    /// `x`: `[..., h]` -> logits `[..., C]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.f_dropout(self.dropout, train)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = x.apply(layer);
            if i + 1 < self.layers.len() {
                x = match self.activation {
                    HeadActivation::Relu => x.f_relu()?,
                    HeadActivation::Gelu => x.f_gelu("none")?,
                    HeadActivation::Tanh => x.f_tanh()?,
                };
            }
        }
        Ok(x)
    }
}

/// A task head on the encoder's sequence output.
#[derive(Debug)]
pub struct TaskHead {
    pub mlp: ClassifierMlp,
    pub task: Task,
}

/// What a head produces.
#[derive(Debug)]
pub enum HeadOutput {
    /// `start_logits`, `end_logits`: `[b, s]` each.
    Span {
        start_logits: Tensor,
        end_logits: Tensor,
    },
    /// `[b, s, C]`.
    TokenLogits(Tensor),
    /// `[b, C]`.
    SequenceLogits(Tensor),
}

impl TaskHead {
    /// Creates the head under `vs` (normally `var_store.root() / "classifier"`).
    pub fn new(vs: &nn::Path, hidden: i64, cfg: &HeadConfig) -> Result<Self> {
        Ok(Self {
            mlp: ClassifierMlp::new(vs, hidden, cfg)?,
            task: cfg.task,
        })
    }

    /// Applies the head to the sequence output `[b, s, h]`.
    pub fn forward(&self, sequence_output: &Tensor, train: bool) -> Result<HeadOutput> {
        Ok(match self.task {
            Task::QuestionAnswering => {
                let logits = self.mlp.forward(sequence_output, train)?;
                HeadOutput::Span {
                    start_logits: logits.f_select(-1, 0)?,
                    end_logits: logits.f_select(-1, 1)?,
                }
            }
            Task::TokenClassification => {
                HeadOutput::TokenLogits(self.mlp.forward(sequence_output, train)?)
            }
            Task::SequenceClassification => HeadOutput::SequenceLogits(
                self.mlp.forward(&sequence_output.f_select(1, 0)?, train)?,
            ),
        })
    }
}

fn check_labels(name: &str, labels: &Tensor, expected: &[i64]) -> Result<()> {
    if labels.size() != expected || labels.kind() != Kind::Int64 {
        return Err(ModelError::Input(format!(
            "{name} must be int64 {expected:?}, got {:?} {:?}",
            labels.kind(),
            labels.size()
        )));
    }
    Ok(())
}

/// Span QA loss (NeMo `SpanningLoss`): mean of the start and end
/// cross-entropies over the batch. Positions are token indices `[b]`.
pub fn question_answering_loss(
    start_logits: &Tensor,
    end_logits: &Tensor,
    start_positions: &Tensor,
    end_positions: &Tensor,
) -> Result<Tensor> {
    let b = start_logits.size()[0];
    check_labels("start_positions", start_positions, &[b])?;
    check_labels("end_positions", end_positions, &[b])?;
    let start = start_logits.f_cross_entropy_loss::<&Tensor>(
        start_positions,
        None,
        Reduction::Mean,
        -100,
        0.0,
    )?;
    let end = end_logits.f_cross_entropy_loss::<&Tensor>(
        end_positions,
        None,
        Reduction::Mean,
        -100,
        0.0,
    )?;
    Ok(start.f_add(&end)?.f_div_scalar(2.0)?)
}

/// Token classification loss (NeMo `CrossEntropyLoss` with a loss mask): mean
/// cross-entropy over tokens where `loss_mask` (`[b, s]`, if given) is nonzero
/// and the label is not `ignore_index` (use -100 when nothing is ignored).
pub fn token_classification_loss(
    logits: &Tensor,
    labels: &Tensor,
    loss_mask: Option<&Tensor>,
    ignore_index: i64,
) -> Result<Tensor> {
    let size = logits.size();
    if size.len() != 3 {
        return Err(ModelError::Input(format!(
            "token logits must be [b, s, C], got {size:?}"
        )));
    }
    check_labels("labels", labels, &size[..2])?;
    let mut labels = labels.shallow_clone();
    if let Some(mask) = loss_mask {
        if mask.size() != size[..2] {
            return Err(ModelError::Input(format!(
                "loss_mask must be {:?}, got {:?}",
                &size[..2],
                mask.size()
            )));
        }
        labels = labels.f_masked_fill(&mask.f_eq(0)?, ignore_index)?;
    }
    Ok(logits
        .f_reshape([-1, size[2]])?
        .f_cross_entropy_loss::<&Tensor>(
            &labels.f_reshape([-1])?,
            None,
            Reduction::Mean,
            ignore_index,
            0.0,
        )?)
}

/// Sequence classification loss: mean cross-entropy, `labels` `[b]`.
pub fn sequence_classification_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    check_labels("labels", labels, &logits.size()[..1])?;
    Ok(logits.f_cross_entropy_loss::<&Tensor>(labels, None, Reduction::Mean, -100, 0.0)?)
}
