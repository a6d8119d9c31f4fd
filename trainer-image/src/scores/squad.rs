//! SQuAD v1.1 exact match and F1, as the official `evaluate-v1.1.py` computes them.

use std::collections::HashMap;

/// Python's `string.punctuation` (ASCII only: unicode punctuation is kept).
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Python's `str.isspace()`: Rust's White_Space plus the ASCII separators
/// U+001C..U+001F, which `str.split()` also splits on.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python `re` `\w` for str patterns: letters, numbers (`str.isalnum()`) and `_`.
fn py_word_char(c: char) -> bool {
    use unicode_categories::UnicodeCategories;
    c == '_' || c.is_letter() || c.is_number()
}

/// Drops the whole words `a`, `an`, `the` (`re.sub(r'\b(a|an|the)\b', ' ', s)`).
fn remove_articles(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let at_boundary = i == 0 || !py_word_char(chars[i - 1]);
        if at_boundary && py_word_char(chars[i]) {
            // the regex tries "a" first, then "an", then "the" (alternation order),
            // each needing a word boundary after it
            let matched = ["a", "an", "the"].iter().find_map(|w| {
                let n = w.chars().count();
                let fits = chars.len() >= i + n
                    && chars[i..i + n].iter().copied().eq(w.chars())
                    && (i + n == chars.len() || !py_word_char(chars[i + n]));
                fits.then_some(n)
            });
            if let Some(n) = matched {
                out.push(' ');
                i += n;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Normalises an answer like the official script: lower case, drop ASCII
/// punctuation, drop articles, collapse whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower
        .chars()
        .filter(|c| !PUNCTUATION.contains(*c))
        .collect();
    let no_articles = remove_articles(&no_punc);
    no_articles
        .split(py_isspace)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// 1.0 when the normalised prediction equals the normalised ground truth.
pub fn exact_match(prediction: &str, ground_truth: &str) -> f64 {
    f64::from(u8::from(
        normalize_answer(prediction) == normalize_answer(ground_truth),
    ))
}

/// Token-bag F1 between normalised prediction and ground truth (0 when they
/// share no token; an empty side also gives 0, as in the official script).
pub fn f1_score(prediction: &str, ground_truth: &str) -> f64 {
    let p = normalize_answer(prediction);
    let g = normalize_answer(ground_truth);
    let p_tokens: Vec<&str> = p.split(py_isspace).filter(|t| !t.is_empty()).collect();
    let g_tokens: Vec<&str> = g.split(py_isspace).filter(|t| !t.is_empty()).collect();
    let mut g_counts: HashMap<&str, usize> = HashMap::new();
    for t in &g_tokens {
        *g_counts.entry(t).or_default() += 1;
    }
    let mut common = 0usize;
    for t in &p_tokens {
        if let Some(c) = g_counts.get_mut(t)
            && *c > 0
        {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p_tokens.len() as f64;
    let recall = common as f64 / g_tokens.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Exact match and F1 in percent over all questions.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SquadScores {
    /// Exact match x 100.
    pub exact_match: f64,
    /// F1 x 100.
    pub f1: f64,
    /// Number of questions scored (all questions of the data set).
    pub total: usize,
    /// Questions without a prediction (scored 0).
    pub unanswered: usize,
}

/// Scores predictions (`question id -> answer text`) against ground truths
/// (`question id -> answer texts`), iterating the questions in the given order:
/// max over ground truths per question, 0 for an unanswered question.
pub fn squad_evaluate<'a, I>(ground_truths: I, predictions: &HashMap<String, String>) -> SquadScores
where
    I: IntoIterator<Item = (&'a str, &'a [String])>,
{
    let (mut em, mut f1, mut total, mut unanswered) = (0.0, 0.0, 0usize, 0usize);
    for (id, truths) in ground_truths {
        total += 1;
        let Some(pred) = predictions.get(id) else {
            unanswered += 1;
            continue;
        };
        em += truths
            .iter()
            .map(|g| exact_match(pred, g))
            .fold(0.0, f64::max);
        f1 += truths.iter().map(|g| f1_score(pred, g)).fold(0.0, f64::max);
    }
    let pct = |x: f64| {
        if total == 0 {
            0.0
        } else {
            100.0 * x / total as f64
        }
    };
    SquadScores {
        exact_match: pct(em),
        f1: pct(f1),
        total,
        unanswered,
    }
}
