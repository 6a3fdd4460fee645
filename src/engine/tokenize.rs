//! Tokenization with the model's tokenizer.json: padding and truncation baked into the file are
//! switched off and replaced by the spec's max length; special tokens as the post-processor says.

use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::spec::ModelSpec;
use crate::{Error, Result};

/// One tokenized input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

pub struct TextTokenizer {
    tok: Tokenizer,
    /// The same tokenizer truncating to the content budget.
    tok_trunc: Tokenizer,
    max_length: usize,
    append_eos: Option<u32>,
    path: std::path::PathBuf,
}

impl TextTokenizer {
    pub fn load(spec: &ModelSpec) -> Result<Self> {
        let path = spec.tokenizer_file.clone();
        let mut tok =
            Tokenizer::from_file(&path).map_err(|e| Error::Tokenizer { path: path.clone(), message: e.to_string() })?;
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| Error::Tokenizer { path: path.clone(), message: e.to_string() })?;
        let budget = spec.max_length.saturating_sub(spec.append_eos.is_some() as usize).max(1);
        let mut tok_trunc = tok.clone();
        tok_trunc
            .with_truncation(Some(TruncationParams {
                max_length: budget,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::Tokenizer { path: path.clone(), message: e.to_string() })?;
        Ok(TextTokenizer { tok, tok_trunc, max_length: spec.max_length, append_eos: spec.append_eos, path })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Tokenizer { path: self.path.clone(), message: e.to_string() }
    }

    /// Content budget: the max length less the EOS we append ourselves.
    fn budget(&self) -> usize {
        self.max_length.saturating_sub(self.append_eos.is_some() as usize).max(1)
    }

    fn finish(&self, enc: &Encoding) -> Tokens {
        let mut ids = enc.get_ids().to_vec();
        let mut type_ids = enc.get_type_ids().to_vec();
        if let Some(eos) = self.append_eos {
            ids.push(eos);
            type_ids.push(0);
        }
        Tokens { ids, type_ids }
    }

    /// Encode texts (each prefixed by `prompt`) with special tokens; longer than the max length is
    /// truncated at the end (special tokens kept, as the reference tokenizers do), or an error when
    /// `truncate` is false.
    pub fn encode_texts(&self, texts: &[String], prompt: &str, truncate: bool) -> Result<Vec<Tokens>> {
        let inputs: Vec<String> =
            if prompt.is_empty() { texts.to_vec() } else { texts.iter().map(|t| format!("{prompt}{t}")).collect() };
        let tok = if truncate { &self.tok_trunc } else { &self.tok };
        let encs = tok.encode_batch(inputs, true).map_err(|e| self.err(e))?;
        let budget = self.budget();
        encs.into_iter()
            .enumerate()
            .map(|(i, enc)| {
                if enc.len() > budget {
                    let tokens = enc.len() + self.append_eos.is_some() as usize;
                    return Err(Error::InputTooLong { index: i, tokens, max: self.max_length });
                }
                Ok(self.finish(&enc))
            })
            .collect()
    }

    /// Encode (query, document) pairs for a cross-encoder, longest-first truncation.
    pub fn encode_pairs(&self, query: &str, docs: &[String], truncate: bool) -> Result<Vec<Tokens>> {
        // Cross-encoders append nothing themselves, so the truncating tokenizer's budget is the max length.
        let tok = if truncate { &self.tok_trunc } else { &self.tok };
        let inputs: Vec<(String, String)> = docs.iter().map(|d| (query.to_string(), d.clone())).collect();
        let encs = tok.encode_batch(inputs, true).map_err(|e| self.err(e))?;
        encs.into_iter()
            .enumerate()
            .map(|(i, e)| {
                if e.len() > self.max_length {
                    return Err(Error::InputTooLong { index: i, tokens: e.len(), max: self.max_length });
                }
                Ok(Tokens { ids: e.get_ids().to_vec(), type_ids: e.get_type_ids().to_vec() })
            })
            .collect()
    }

    /// Ids of a text without special tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tok.encode(text, false).map_err(|e| self.err(e))?.get_ids().to_vec())
    }

    /// Encode texts with special tokens, each cut to at most `budget` tokens (special tokens kept,
    /// content cut at the end, as `truncation=True, max_length=budget` does). Returns the ids and
    /// whether anything was cut.
    pub fn encode_within(&self, texts: Vec<String>, budget: usize) -> Result<Vec<(Vec<u32>, bool)>> {
        let added = self.tok.get_post_processor().map_or(0, |p| p.added_tokens(false));
        let encs = self.tok.encode_batch(texts, false).map_err(|e| self.err(e))?;
        encs.into_iter()
            .map(|mut enc| {
                let cut = enc.len() + added > budget;
                if cut {
                    enc.truncate(budget.saturating_sub(added), 0, TruncationDirection::Right);
                }
                let enc = self.tok.post_process(enc, None, true).map_err(|e| self.err(e))?;
                Ok((enc.get_ids().to_vec(), cut))
            })
            .collect()
    }

    /// Tokens of a prompt as sentence-transformers counts them for `include_prompt: false`
    /// (the prompt tokenized with special tokens, less the trailing one).
    pub fn prompt_length(&self, prompt: &str) -> Result<usize> {
        let n = self.tok.encode(prompt, true).map_err(|e| self.err(e))?.len();
        Ok(n.saturating_sub(1))
    }

    /// Count tokens of texts as the model would see them (for usage reporting).
    pub fn count(&self, text: &str) -> Result<usize> {
        Ok(self.tok.encode(text, true).map_err(|e| self.err(e))?.len())
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tok.id_to_token(id)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tok.decode(ids, false).map_err(|e| self.err(e))
    }
}
