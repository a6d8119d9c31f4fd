//! Reading SQuAD v1.1 JSON (`{"data": [{"title", "paragraphs": [{"context",
//! "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::super::DataError;
use super::super::error::read_text;

/// One ground-truth answer: its text and its first character (not byte) in the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquadAnswer {
    /// Answer text.
    pub text: String,
    /// Index of its first character in the context.
    pub start_char: usize,
}

/// One question with its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquadExample {
    /// Question id (key of the predictions file).
    pub id: String,
    /// Article title.
    pub title: String,
    /// The question.
    pub question: String,
    /// The paragraph (shared by the paragraph's questions).
    pub context: Arc<str>,
    /// Ground-truth answers (the first is the training target); may be empty
    /// for prediction input.
    pub answers: Vec<SquadAnswer>,
}

#[derive(Deserialize)]
struct File {
    data: Vec<Article>,
}
#[derive(Deserialize)]
struct Article {
    #[serde(default)]
    title: String,
    paragraphs: Vec<Paragraph>,
}
#[derive(Deserialize)]
struct Paragraph {
    context: String,
    qas: Vec<Qa>,
}
#[derive(Deserialize)]
struct Qa {
    id: serde_json::Value,
    question: String,
    #[serde(default)]
    answers: Vec<Answer>,
}
#[derive(Deserialize)]
struct Answer {
    text: String,
    answer_start: i64,
}

/// Reads a SQuAD v1.1 JSON file.
pub fn read_squad_file(path: &Path) -> Result<Vec<SquadExample>, DataError> {
    parse_squad_json(&read_text(path)?, path)
}

/// Parses SQuAD v1.1 JSON; `path` names the source in errors. Answers whose
/// `answer_start` lies outside the context, and repeated question ids, are
/// errors. Answers whose text differs from the context at `answer_start` are
/// kept as given (the span `answer_start .. answer_start + len(text)` is the
/// target, as in Hugging Face `run_qa`).
pub fn parse_squad_json(text: &str, path: &Path) -> Result<Vec<SquadExample>, DataError> {
    let file: File = serde_json::from_str(text).map_err(|e| {
        DataError::line(
            path,
            e.line(),
            format!("not SQuAD v1.1 JSON (column {}): {e}", e.column()),
        )
    })?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (a, article) in file.data.into_iter().enumerate() {
        for (p, para) in article.paragraphs.into_iter().enumerate() {
            let context: Arc<str> = Arc::from(para.context);
            let n_chars = context.chars().count();
            for (q, qa) in para.qas.into_iter().enumerate() {
                let at = format!("data[{a}].paragraphs[{p}].qas[{q}]");
                let id = match qa.id {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    other => {
                        return Err(DataError::file(
                            path,
                            format!("{at}.id must be a string, found {other}"),
                        ));
                    }
                };
                if !seen.insert(id.clone()) {
                    return Err(DataError::file(
                        path,
                        format!(
                            "{at}: question id {id:?} appears twice; ids key the predictions and must be unique"
                        ),
                    ));
                }
                let mut answers = Vec::with_capacity(qa.answers.len());
                for (k, ans) in qa.answers.into_iter().enumerate() {
                    let len = ans.text.chars().count();
                    if ans.answer_start < 0 || ans.answer_start as usize + len > n_chars {
                        return Err(DataError::file(
                            path,
                            format!(
                                "{at}.answers[{k}] (question id {id:?}): answer_start {} + {len} characters of {:?} lies outside the {n_chars}-character context",
                                ans.answer_start, ans.text
                            ),
                        ));
                    }
                    answers.push(SquadAnswer {
                        text: ans.text,
                        start_char: ans.answer_start as usize,
                    });
                }
                out.push(SquadExample {
                    id,
                    title: article.title.clone(),
                    question: qa.question,
                    context: context.clone(),
                    answers,
                });
            }
        }
    }
    Ok(out)
}
