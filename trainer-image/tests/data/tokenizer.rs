//! The Rust BERT tokenizer against Hugging Face `BertTokenizerFast` on the
//! same vocabulary files (both built-in vocabularies, cased and uncased).

use crate::support::data_common;

use megatron_trainer::tokenizer::{BertTokenizer, BuiltinVocab, TokenizerError};
use serde_json::json;

fn varied_texts() -> Vec<String> {
    let long_word = "a".repeat(101);
    let mut texts: Vec<String> = [
        "Hello, world! This is BERT's tokenizer.",
        "Café naïve résumé Ångström façade — über coöperate",
        "ÉCOLE NORMALE Supérieure",
        "東京は日本の首都です。中文字符和 English mixed",
        "안녕하세요 세계 ひらがな カタカナ",
        "punctuation: (a) [b] {c} <d> \"e\" 'f' `g` ~h~ @i# $j% ^k& *l* -m_ +n= |o\\ /p?",
        "tabs\tand\nnewlines\r\nand\u{00a0}nbsp\u{2003}em-space",
        "control\u{0000}chars\u{0007}here\u{200b}zero\u{feff}width",
        "[UNK] [CLS] [SEP] [MASK] [PAD] [unk] [Mask] x[UNK]y",
        "numbers 3.14159 1,000,000 2nd 42nd 1990s",
        "emoji 😀🚀 and symbols ©®™ ±×÷ ∑∫",
        "unbelievably antidisestablishmentarianism pseudopseudohypoparathyroidism",
        "   leading and trailing spaces   ",
        "",
        "ﬁ ligature and ＦＵＬＬＷＩＤＴＨ letters",
        "Ǆ ǅ ǆ Σίσυφος ΟΔΥΣΣΕΥΣ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    texts.push(format!("short {long_word} words"));
    texts.push(format!("exactly {} hundred", "b".repeat(100)));
    texts.extend(data_common::real_sentences().into_iter().take(40));
    texts
}

fn compare(vocab_file: &str, lower: bool, tok: &BertTokenizer) {
    let texts = varied_texts();
    let sentences = data_common::real_sentences();
    let pairs: Vec<(String, String)> = vec![
        ("What is the license?".into(), sentences[..6].join(" ")),
        ("Où est-ce ?".into(), "Ça va très bien, merci.".into()),
        ("".into(), "context only".into()),
        ("東京?".into(), "[SEP] inside [CLS] text".into()),
    ];
    let req = json!({
        "op": "tokenize",
        "vocab_file": data_common::vocab(vocab_file),
        "lower": lower,
        "texts": texts,
        "pairs": pairs.iter().map(|(a, b)| [a, b]).collect::<Vec<_>>(),
    });
    let hf = data_common::python("data_hf_reference.py", &req);
    for (i, t) in texts.iter().enumerate() {
        let ours = tok.encode(t, true).unwrap();
        let want = &hf["texts"][i];
        let want_tokens: Vec<String> = serde_json::from_value(want["tokens"].clone()).unwrap();
        let want_ids: Vec<u32> = serde_json::from_value(want["ids"].clone()).unwrap();
        let want_offsets: Vec<(usize, usize)> =
            serde_json::from_value(want["offsets"].clone()).unwrap();
        assert_eq!(ours.tokens, want_tokens, "{vocab_file}: tokens of {t:?}");
        assert_eq!(ours.ids, want_ids, "{vocab_file}: ids of {t:?}");
        assert_eq!(ours.offsets, want_offsets, "{vocab_file}: offsets of {t:?}");
    }
    for (i, (a, b)) in pairs.iter().enumerate() {
        let ours = tok.encode_pair(a, b).unwrap();
        let want = &hf["pairs"][i];
        let want_ids: Vec<u32> = serde_json::from_value(want["ids"].clone()).unwrap();
        let want_types: Vec<u32> = serde_json::from_value(want["type_ids"].clone()).unwrap();
        let want_offsets: Vec<(usize, usize)> =
            serde_json::from_value(want["offsets"].clone()).unwrap();
        assert_eq!(
            ours.ids, want_ids,
            "{vocab_file}: pair ids of {a:?} / {b:?}"
        );
        assert_eq!(ours.type_ids, want_types, "{vocab_file}: pair type ids");
        assert_eq!(ours.offsets, want_offsets, "{vocab_file}: pair offsets");
    }
}

#[test]
fn uncased_matches_hugging_face() {
    let tok = BertTokenizer::from_name("megatron-bert-uncased").unwrap();
    assert!(tok.lowercase());
    compare("bert-base-uncased-vocab.txt", true, &tok);
}

#[test]
fn cased_matches_hugging_face() {
    let tok = BertTokenizer::from_name("megatron-bert-345m-cased").unwrap();
    assert!(!tok.lowercase());
    compare("bert-base-cased-vocab.txt", false, &tok);
}

#[test]
fn builtin_names_resolve_to_the_standard_vocabularies() {
    for (name, size, lower) in [
        ("megatron-bert-uncased", 30522, true),
        ("megatron-bert-345m-uncased", 30522, true),
        ("megatron-bert-cased", 28996, false),
        ("megatron-bert-345m-cased", 28996, false),
    ] {
        let t = BertTokenizer::from_name(name).unwrap();
        assert_eq!(t.vocab_size(), size, "{name}");
        assert_eq!(t.lowercase(), lower, "{name}");
        assert_eq!(
            (t.pad_id(), t.unk_id(), t.cls_id(), t.sep_id()),
            (0, 100, 101, 102),
            "{name}"
        );
    }
    assert_eq!(
        BuiltinVocab::from_name("MEGATRON-BERT-UNCASED").unwrap(),
        BuiltinVocab::BertUncased
    );
    let from_file =
        BertTokenizer::from_vocab_file(&data_common::vocab("bert-base-uncased-vocab.txt"), true)
            .unwrap();
    assert_eq!(
        from_file.tokenize("Hello World").unwrap(),
        ["hello", "world"]
    );
}

#[test]
fn biomegatron_and_unknown_names_ask_for_a_vocab_file() {
    for name in ["biomegatron-bert-345m-uncased", "no-such-model"] {
        let err = BertTokenizer::from_name(name).unwrap_err();
        assert!(
            matches!(err, TokenizerError::UnknownName { .. }),
            "{name}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("tokenizer.vocabFile") && msg.contains(name),
            "{msg}"
        );
    }
}

#[test]
fn bad_vocabulary_files_are_refused_with_the_line() {
    let dir = data_common::temp_dir("vocab");
    let cases = [
        (
            "dup.txt",
            "[PAD]\n[UNK]\n[CLS]\n[SEP]\nword\nword\n",
            "line 6 repeats token \"word\" of line 5",
        ),
        (
            "nocls.txt",
            "[PAD]\n[UNK]\n[SEP]\nword\n",
            "special token [CLS] is missing",
        ),
        ("blank.txt", "[PAD]\n\n[UNK]\n", "line 2 is empty"),
        ("empty.txt", "", "empty"),
    ];
    for (file, content, want) in cases {
        let p = dir.join(file);
        std::fs::write(&p, content).unwrap();
        let err = BertTokenizer::from_vocab_file(&p, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want) && err.contains(file), "{file}: {err}");
    }
    let missing = BertTokenizer::from_vocab_file(&dir.join("absent.txt"), true)
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("absent.txt") && missing.contains("cannot read"),
        "{missing}"
    );
    // CRLF line endings are accepted
    let p = dir.join("crlf.txt");
    std::fs::write(&p, "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhello\r\n").unwrap();
    let t = BertTokenizer::from_vocab_file(&p, true).unwrap();
    assert_eq!(t.encode("Hello", false).unwrap().ids, [4]);
}

#[test]
fn words_over_100_characters_become_unk() {
    let t = BertTokenizer::from_name("megatron-bert-uncased").unwrap();
    assert_eq!(t.tokenize(&"a".repeat(101)).unwrap(), ["[UNK]"]);
    assert_ne!(t.tokenize(&"a".repeat(100)).unwrap(), ["[UNK]"]);
}
