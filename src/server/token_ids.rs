//! What token ids in an OpenAI `/v1/embeddings` request mean.
//!
//! OpenAI's own clients tokenize with tiktoken before sending: langchain-openai's
//! `OpenAIEmbeddings` (default `check_embedding_ctx_length=True`) splits texts into cl100k_base
//! token ids and sends the ids. Taken as the model's own ids they give wrong vectors without an
//! error, so by default (`openai`) ids are decoded with cl100k_base back to text and the text is
//! tokenized with the model's tokenizer. `model` keeps ids as the model's own (for clients that
//! tokenize with the served model's tokenizer); `reject` answers 422. TEI's `/embed` always takes
//! the model's own ids, as TEI does.

use std::sync::OnceLock;

use serde::Deserialize;
use tiktoken_rs::CoreBPE;

use super::errors::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenIds {
    /// tiktoken cl100k_base ids (OpenAI's `text-embedding-3-*` / `ada-002` tokenizer), decoded and
    /// re-tokenized.
    #[default]
    Openai,
    /// The served model's own vocabulary.
    Model,
    /// Token-id input is refused (422).
    Reject,
}

impl TokenIds {
    pub fn parse(s: &str) -> crate::Result<TokenIds> {
        match s {
            "openai" => Ok(TokenIds::Openai),
            "model" => Ok(TokenIds::Model),
            "reject" => Ok(TokenIds::Reject),
            other => Err(crate::Error::InvalidInput(format!(
                "token_ids must be `openai`, `model` or `reject`, got `{other}`"
            ))),
        }
    }
}

/// cl100k_base, built once from the BPE table compiled into the binary (no download).
fn cl100k() -> ApiResult<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| match tiktoken_rs::cl100k_base() {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!("cannot build the cl100k_base tokenizer: {e}");
            None
        }
    })
    .as_ref()
    .ok_or_else(|| ApiError::internal("the cl100k_base tokenizer is unavailable"))
}

/// Decodes each row of cl100k_base ids to text. A row stops once its text passes `byte_limit`
/// (the model's tokenizer cuts texts far shorter), so memory stays bounded by the payload.
/// Bytes that are not UTF-8 (a row split inside a character) become U+FFFD, as tiktoken's
/// `errors="replace"`.
pub fn decode_openai(rows: &[Vec<u32>], byte_limit: usize) -> ApiResult<Vec<String>> {
    let bpe = cl100k()?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            if row.is_empty() {
                return Err(ApiError::invalid(format!("input {i} has no token ids")));
            }
            let mut bytes = Vec::new();
            for &t in row {
                let piece = bpe.decode_bytes(&[t]).map_err(|_| {
                    ApiError::invalid(format!(
                        "input {i}: token id {t} is not a cl100k_base token (token ids are read as OpenAI's \
                         tokenizer; serve with token_ids = \"model\" to send the model's own ids)"
                    ))
                })?;
                bytes.extend_from_slice(&piece);
                if bytes.len() > byte_limit {
                    break;
                }
            }
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cl100k_ids_decode_to_text() {
        // tiktoken.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
        assert_eq!(decode_openai(&[vec![15339, 1917]], 1 << 20).unwrap(), vec!["hello world".to_string()]);
        assert!(decode_openai(&[vec![200_000]], 100).is_err());
        assert!(decode_openai(&[vec![]], 100).is_err());
    }

    #[test]
    fn config_key() {
        let m: crate::server::ModelConfig = toml::from_str("id = \"m\"\ntoken_ids = \"reject\"").unwrap();
        assert_eq!(m.token_ids, Some(TokenIds::Reject));
        assert!(toml::from_str::<crate::server::ModelConfig>("id = \"m\"\ntoken_ids = \"tiktoken\"").is_err());
    }

    #[test]
    fn parse_modes() {
        assert_eq!(TokenIds::parse("model").unwrap(), TokenIds::Model);
        assert!(TokenIds::parse("tiktoken").is_err());
    }
}
