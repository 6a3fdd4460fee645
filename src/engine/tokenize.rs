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

/// Characters kept of a text per token of the max length, cut before tokenizing. A token of these
/// tokenizers covers a few characters of normal text (about 4 in English, 1 to 2 in CJK; WordPiece
/// turns a word of more than 100 characters into one `[UNK]`), so the first max-length tokens of
/// any text with fewer than 16 characters per token are the same with and without the cut; it
/// bounds what one text costs to tokenize (a 2 MB text: 4,096 characters for a 256-token model).
pub const CHARS_PER_TOKEN: usize = 16;

/// Texts per tokenizer call, and characters (after the cut) per call: the tokenizer's per-token
/// state (strings, offsets) of one chunk is all that is alive at once.
const CHUNK_TEXTS: usize = 256;
const CHUNK_CHARS: usize = 1 << 18;

/// What happens to an input longer than the max length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Keep the start (the reference tokenizers' behaviour).
    #[default]
    End,
    /// Keep the end of the text (Cohere's `truncate: START`, TEI's `truncation_direction: left`);
    /// a prompt or instruction in front of it is kept whole.
    Start,
    /// An error.
    Refuse,
}

impl Truncation {
    /// [`Truncation::Refuse`] when `no_truncate` (the CLI's flag), else the default.
    pub fn refuse_if(no_truncate: bool) -> Self {
        if no_truncate {
            Truncation::Refuse
        } else {
            Truncation::End
        }
    }
}

/// The last `limit` characters of `text` (cut at a character boundary).
pub fn cut_chars_start(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    match limit.checked_sub(1).and_then(|n| text.char_indices().rev().nth(n)) {
        Some((i, _)) => &text[i..],
        None if limit == 0 => "",
        None => text,
    }
}

/// The first `limit` characters of `text` (cut at a character boundary).
pub fn cut_chars(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    match text.char_indices().nth(limit) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// `texts` in chunks of at most [`CHUNK_TEXTS`] texts and about [`CHUNK_CHARS`] bytes after the
/// cut, with the index of each chunk's first text.
fn chunks(texts: &[String], limit: usize) -> impl Iterator<Item = (usize, &[String])> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= texts.len() {
            return None;
        }
        let mut end = start;
        let mut bytes = 0;
        while end < texts.len() && end - start < CHUNK_TEXTS && (end == start || bytes < CHUNK_CHARS) {
            bytes += texts[end].len().min(limit.saturating_mul(4));
            end += 1;
        }
        let chunk = (start, &texts[start..end]);
        start = end;
        Some(chunk)
    })
}

/// Tokens the tokenizers crate keeps of a text when truncating to `max` (it stops at the end of the
/// pre-token that reaches `max`, before the pair's longest-first truncation): the lengths that
/// decide which side of a pair longest-first cuts. `enc` is the whole text's encoding, whose word
/// ids are its pre-token indices.
fn early_exit_len(enc: &Encoding, max: usize) -> usize {
    let n = enc.len();
    if n <= max || max == 0 {
        return n;
    }
    let words = enc.get_word_ids();
    let w = words[max - 1];
    let mut k = max;
    while k < n && w.is_some() && words[k] == w {
        k += 1;
    }
    k
}

/// Lengths the tokenizers crate's longest-first truncation keeps of a pair (`truncate_encodings`).
pub fn longest_first(n_a: usize, n_b: usize, max: usize) -> (usize, usize) {
    if n_a + n_b <= max {
        return (n_a, n_b);
    }
    if max == 0 {
        return (0, 0);
    }
    let swap = n_a > n_b;
    let mut n1 = n_a.min(n_b);
    let mut n2 = if n1 > max { n1 } else { n1.max(max - n1) };
    if n1 + n2 > max {
        n1 = max / 2;
        n2 = n1 + max % 2;
    }
    if swap {
        (n2, n1)
    } else {
        (n1, n2)
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

    /// Characters of one text kept before tokenizing (see [`CHARS_PER_TOKEN`]).
    pub fn char_limit(&self) -> usize {
        self.max_length.saturating_mul(CHARS_PER_TOKEN)
    }

    /// Special tokens the post-processor adds to a single text (`pair`: to a pair).
    pub fn added_tokens(&self, pair: bool) -> usize {
        self.tok.get_post_processor().map_or(0, |p| p.added_tokens(pair))
    }

    /// A prompt, instruction or query must leave room for at least one token of input: checked on
    /// its characters first (no tokenizing of megabytes), then on its tokens. Returns its tokens
    /// without special tokens.
    fn check_prefix(&self, what: &'static str, text: &str, fixed: usize) -> Result<Encoding> {
        if text.len() > self.char_limit() && cut_chars(text, self.char_limit()).len() < text.len() {
            return Err(Error::PromptTooLong { what, tokens: self.max_length + 1, max: self.max_length });
        }
        let enc = self.tok.encode(text, false).map_err(|e| self.err(e))?;
        if enc.len() + fixed >= self.max_length {
            return Err(Error::PromptTooLong { what, tokens: enc.len() + fixed, max: self.max_length });
        }
        Ok(enc)
    }

    /// Encode texts (each prefixed by `prompt`) with special tokens; longer than the max length is
    /// truncated at the end (special tokens kept, as the reference tokenizers do), or an error when
    /// `truncate` is false. Each text is cut to [`Self::char_limit`] characters first, and the work
    /// goes in chunks, so neither a huge text nor many texts hold more than a chunk of
    /// tokenizer state at once. A prompt that leaves no room for the text is an error.
    pub fn encode_texts(&self, texts: &[String], prompt: &str, truncation: Truncation) -> Result<Vec<Tokens>> {
        let prompt_tokens = if prompt.is_empty() {
            0
        } else {
            let fixed = self.added_tokens(false) + self.append_eos.is_some() as usize;
            self.check_prefix("prompt or instruction", prompt, fixed)?.len()
        };
        let limit = self.char_limit();
        // Keeping the end needs the whole (cut) text's tokens; the other two let the tokenizer stop.
        let tok = if truncation == Truncation::End { &self.tok_trunc } else { &self.tok };
        let budget = self.budget();
        let mut out = Vec::with_capacity(texts.len());
        for (start, chunk) in chunks(texts, limit) {
            let mut inputs = Vec::with_capacity(chunk.len());
            for (j, t) in chunk.iter().enumerate() {
                let cut = if truncation == Truncation::Start { cut_chars_start(t, limit) } else { cut_chars(t, limit) };
                if truncation == Truncation::Refuse && cut.len() < t.len() {
                    return Err(Error::TextTooLong { index: start + j, max_chars: limit, max: self.max_length });
                }
                // The prompt and the text tokenized together, as the reference does: tokens at the
                // seam may differ from the two tokenized apart.
                inputs.push(if prompt.is_empty() { cut.to_string() } else { format!("{prompt}{cut}") });
            }
            let encs = tok.encode_batch(inputs, true).map_err(|e| self.err(e))?;
            for (j, enc) in encs.into_iter().enumerate() {
                if enc.len() <= budget {
                    out.push(self.finish(&enc));
                } else if truncation == Truncation::Start {
                    out.push(self.keep_end(&enc, prompt_tokens, enc.len() - budget));
                } else {
                    let tokens = enc.len() + self.append_eos.is_some() as usize;
                    return Err(Error::InputTooLong { index: start + j, tokens, max: self.max_length });
                }
            }
        }
        Ok(out)
    }

    /// `enc` less `drop` tokens of text right after the leading special tokens and the prompt's
    /// `prompt_tokens`: the prompt and the end of the text stay. [`Self::check_prefix`] has made
    /// sure the prompt and the special tokens leave room for at least one token of text.
    fn keep_end(&self, enc: &Encoding, prompt_tokens: usize, drop: usize) -> Tokens {
        let lead = enc.get_special_tokens_mask().iter().take_while(|&&m| m == 1).count();
        let from = (lead + prompt_tokens).min(enc.len());
        let to = (from + drop).min(enc.len());
        let mut t = self.finish(enc);
        t.ids.drain(from..to);
        t.type_ids.drain(from..to);
        t
    }

    /// Encode (query, document) pairs for a cross-encoder, longest-first truncation: the same ids as
    /// the tokenizer's own pair encoding with truncation, but the query is tokenized once, and each
    /// pair gets a copy of at most the max length of its tokens, not of its text.
    pub fn encode_pairs(&self, query: &str, docs: &[String], truncate: bool) -> Result<Vec<Tokens>> {
        let limit = self.char_limit();
        let added = self.added_tokens(true);
        // The truncating tokenizer's budget (no EOS appended for cross-encoders) less the special tokens.
        let room = self.budget().saturating_sub(added);
        if !truncate && query.len() > limit && cut_chars(query, limit).len() < query.len() {
            return Err(Error::PromptTooLong { what: "query", tokens: self.max_length + 1, max: self.max_length });
        }
        let q = self.tok.encode(cut_chars(query, limit), false).map_err(|e| self.err(e))?;
        if !truncate && q.len() + added >= self.max_length {
            return Err(Error::PromptTooLong { what: "query", tokens: q.len() + added, max: self.max_length });
        }
        // The query cut to each length longest-first gives it; there are only a few distinct ones.
        let mut q_cut: std::collections::HashMap<usize, Encoding> = std::collections::HashMap::new();
        let mut out = Vec::with_capacity(docs.len());
        for (start, chunk) in chunks(docs, limit) {
            let mut inputs = Vec::with_capacity(chunk.len());
            for (j, d) in chunk.iter().enumerate() {
                let cut = cut_chars(d, limit);
                if !truncate && cut.len() < d.len() {
                    return Err(Error::TextTooLong { index: start + j, max_chars: limit, max: self.max_length });
                }
                inputs.push(cut);
            }
            let encs = self.tok.encode_batch(inputs, false).map_err(|e| self.err(e))?;
            for (j, mut d) in encs.into_iter().enumerate() {
                let index = start + j;
                let (kq, kd) = if truncate {
                    let cap = self.budget();
                    longest_first(early_exit_len(&q, cap), early_exit_len(&d, cap), room)
                } else {
                    (q.len(), d.len())
                };
                if !truncate && kq + kd + added > self.max_length {
                    return Err(Error::InputTooLong { index, tokens: kq + kd + added, max: self.max_length });
                }
                let qe = match q_cut.get(&kq) {
                    Some(e) => e.clone(),
                    None => {
                        let mut e = q.clone();
                        e.truncate(kq, 0, TruncationDirection::Right);
                        e.take_overflowing();
                        q_cut.insert(kq, e.clone());
                        e
                    }
                };
                d.truncate(kd, 0, TruncationDirection::Right);
                d.take_overflowing();
                // The second sequence of a pair has type id 1 before post-processing, as in
                // `Tokenizer::encode` of a pair.
                d.set_type_ids(vec![1; d.len()]);
                let e = self.tok.post_process(qe, Some(d), true).map_err(|e| self.err(e))?;
                if e.len() > self.max_length {
                    return Err(Error::InputTooLong { index, tokens: e.len(), max: self.max_length });
                }
                out.push(Tokens { ids: e.get_ids().to_vec(), type_ids: e.get_type_ids().to_vec() });
            }
        }
        Ok(out)
    }

    /// Ids of a text without special tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tok.encode(text, false).map_err(|e| self.err(e))?.get_ids().to_vec())
    }

    /// Qwen3-Reranker bodies `head + sep + doc`: `head` (instruction and query, ending in the
    /// template's `<Document>:`) tokenized once, each document (with `sep`, its leading space: the
    /// byte-level pre-tokenizer always splits after `:`, so the ids are those of the whole body)
    /// cut to the room left in `budget` tokens. Returns each body's ids and whether the document was
    /// cut. A head that leaves no room for a document token is an error.
    pub fn encode_bodies(
        &self,
        head: &str,
        sep: &str,
        docs: &[String],
        budget: usize,
    ) -> Result<Vec<(Vec<u32>, bool)>> {
        let added = self.added_tokens(false);
        let limit = self.char_limit();
        // The head holds the instruction and the query: twice the cut of one text at most.
        if head.len() > 2 * limit && cut_chars(head, 2 * limit).len() < head.len() {
            return Err(Error::PromptTooLong {
                what: "instruction and query",
                tokens: self.max_length + 1,
                max: self.max_length,
            });
        }
        let h = self.tok.encode(head, false).map_err(|e| self.err(e))?;
        let fixed = self.max_length.saturating_sub(budget) + added;
        if h.len() + fixed >= self.max_length {
            return Err(Error::PromptTooLong {
                what: "instruction and query",
                tokens: h.len() + fixed,
                max: self.max_length,
            });
        }
        let room = budget - added - h.len();
        let mut out = Vec::with_capacity(docs.len());
        for (_, chunk) in chunks(docs, limit) {
            let inputs: Vec<String> = chunk.iter().map(|d| format!("{sep}{}", cut_chars(d, limit))).collect();
            let encs = self.tok.encode_batch(inputs, false).map_err(|e| self.err(e))?;
            for (j, mut d) in encs.into_iter().enumerate() {
                let was_cut = d.len() > room || cut_chars(&chunk[j], limit).len() < chunk[j].len();
                d.truncate(room, 0, TruncationDirection::Right);
                d.take_overflowing();
                let ids = if added == 0 {
                    h.get_ids().iter().chain(d.get_ids()).copied().collect()
                } else {
                    let body = Encoding::merge([h.clone(), d], false);
                    self.tok.post_process(body, None, true).map_err(|e| self.err(e))?.get_ids().to_vec()
                };
                out.push((ids, was_cut));
            }
        }
        Ok(out)
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
