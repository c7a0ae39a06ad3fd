//! Interaction-log formats. Each parses one line into zero or more (user, item[, time][, rating]) rows.

mod delimited;
mod json;

use crate::error::{Error, Result};
use crate::intern::{RawId, TextInterner};
use crate::reader::{utf8_error_in, Block};

pub use delimited::{split_fields, Delimited, Sep};
pub use json::{Amazon2023Reviews, AmazonReviews, YelpReviews};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Tsv,
    SeqLines,
    LlmEsr,
    RecBole,
    Amazon,
    Amazon2023,
    Yelp,
    MovieLens,
}

impl Format {
    /// Every format, in the order the command line lists them.
    pub const ALL: [Format; 9] = [
        Format::Csv,
        Format::Tsv,
        Format::SeqLines,
        Format::LlmEsr,
        Format::RecBole,
        Format::Amazon,
        Format::Amazon2023,
        Format::Yelp,
        Format::MovieLens,
    ];
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::SeqLines => "seqlines",
            Format::LlmEsr => "llmesr",
            Format::RecBole => "recbole",
            Format::Amazon => "amazon",
            Format::Amazon2023 => "amazon2023",
            Format::Yelp => "yelp",
            Format::MovieLens => "movielens",
        }
    }
}

/// How the user described a delimited file's columns (names from the header, or roles by position).
#[derive(Clone, Debug, Default)]
pub struct ColumnSpec {
    pub user: Option<String>,
    pub item: Option<String>,
    pub time: Option<String>,
    pub rating: Option<String>,
    /// Headerless files: one role per column (`user`, `item`, `time`, `rating`, or `-` to ignore).
    pub positional: Option<Vec<String>>,
}

/// Rows parsed from one block, with ids interned locally (keys borrow from the block).
pub struct Chunk {
    pub users: Vec<RawId>,
    pub items: Vec<RawId>,
    pub times: Vec<i64>,
    pub ratings: Vec<f32>,
    pub user_keys: TextInterner,
    pub item_keys: TextInterner,
    pub skipped: u64,
    pub bad_lines: Vec<String>,
}

impl Chunk {
    pub fn new() -> Self {
        Chunk {
            users: Vec::new(),
            items: Vec::new(),
            times: Vec::new(),
            ratings: Vec::new(),
            user_keys: TextInterner::default(),
            item_keys: TextInterner::default(),
            skipped: 0,
            bad_lines: Vec::new(),
        }
    }
    /// Room for `rows` more rows, so parsing a block does not reallocate.
    pub fn reserve(&mut self, rows: usize, has_time: bool, has_rating: bool) {
        self.users.reserve(rows);
        self.items.reserve(rows);
        if has_time {
            self.times.reserve(rows);
        }
        if has_rating {
            self.ratings.reserve(rows);
        }
    }
    /// Empties the chunk for the next block, keeping its memory.
    pub fn reset(&mut self) {
        self.users.clear();
        self.items.clear();
        self.times.clear();
        self.ratings.clear();
        self.user_keys.clear();
        self.item_keys.clear();
        self.skipped = 0;
        self.bad_lines.clear();
    }
    pub fn push(&mut self, user: &[u8], item: &[u8], time: Option<i64>, rating: Option<f32>) {
        let (u, i) = (self.user_keys.raw_id(user), self.item_keys.raw_id(item));
        self.push_raw(u, i, time, rating);
    }
    /// Pushes ids already turned into [`RawId`]s.
    pub fn push_raw(&mut self, user: RawId, item: RawId, time: Option<i64>, rating: Option<f32>) {
        self.users.push(user);
        self.items.push(item);
        if let Some(t) = time {
            self.times.push(t);
        }
        if let Some(r) = rating {
            self.ratings.push(r);
        }
    }
}

impl Default for Chunk {
    fn default() -> Self {
        Self::new()
    }
}

pub trait RecordParser: Sync {
    fn has_time(&self) -> bool;
    fn has_rating(&self) -> bool;
    /// Lines before the data (headers).
    fn header_lines(&self) -> usize {
        0
    }
    /// Parses one line (valid UTF-8, no line end) into `out`; on error pushes nothing.
    fn parse(&self, line: &[u8], out: &mut Chunk) -> std::result::Result<(), String>;

    /// Parses a block's lines (after `skip` header lines) into `chunk`. A default method, so each
    /// format gets its own copy of the loop with `parse` called statically (and inlined).
    fn parse_block(&self, block: &Block, chunk: &mut Chunk, skip: usize, path: &str, skip_bad: bool) -> Result<()> {
        let lines = memchr::memchr_iter(b'\n', &block.data).count() + 1;
        chunk.reserve(lines, self.has_time(), self.has_rating());
        let all_utf8 = std::str::from_utf8(&block.data).is_ok();
        for (line_no, line) in block.lines().skip(skip) {
            let res = match (!all_utf8).then(|| utf8_error_in(line)).flatten() {
                Some(e) => Err(e),
                None => self.parse(line, chunk),
            };
            if let Err(msg) = res {
                if !skip_bad {
                    return Err(Error::Parse { file: path.to_string(), line: line_no, msg });
                }
                chunk.skipped += 1;
                if chunk.bad_lines.len() < MAX_BAD_EXAMPLES {
                    chunk.bad_lines.push(format!("{path}:{line_no}: {msg}"));
                }
            }
        }
        Ok(())
    }
}

/// How many skipped lines are quoted in the summary and meta.json.
pub const MAX_BAD_EXAMPLES: usize = 5;

/// Validates an id token: non-empty, and for integer-id formats a decimal that fits in 64 bits.
/// A token as it appears in a message: at most 40 characters, longer ones cut with their length.
pub fn shown(t: &[u8]) -> String {
    let s = String::from_utf8_lossy(t);
    match s.char_indices().nth(40) {
        Some((cut, _)) => format!("{}... ({} bytes)", &s[..cut], t.len()),
        None => s.into_owned(),
    }
}

pub fn check_id(what: &str, t: &[u8], integer: bool) -> std::result::Result<(), String> {
    if t.is_empty() {
        return Err(format!("empty {what} id"));
    }
    if integer {
        let s = shown(t);
        if !t.iter().all(u8::is_ascii_digit) {
            return Err(format!("{what} id '{s}' is not a non-negative integer"));
        }
        if s.parse::<u64>().is_err() {
            return Err(format!("{what} id {s} does not fit in 64 bits"));
        }
    }
    Ok(())
}

/// A plain decimal integer of at most 18 digits (the common case, parsed without UTF-8 checks).
fn small_uint(tok: &[u8]) -> Option<i64> {
    if tok.len() > 18 {
        return None;
    }
    crate::swar::parse_digits(tok).map(|v| v as i64)
}

pub fn parse_rating(tok: &[u8]) -> std::result::Result<f32, String> {
    if let Some(v) = small_uint(tok).filter(|v| *v < 1 << 24) {
        return Ok(v as f32); // exact
    }
    let s = std::str::from_utf8(tok).unwrap_or("").trim();
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("rating '{}' is not a number", shown(s.as_bytes()))),
    }
}

pub fn parse_time(tok: &[u8]) -> std::result::Result<i64, String> {
    if let Some(v) = small_uint(tok) {
        return Ok(v);
    }
    let s = std::str::from_utf8(tok).unwrap_or("").trim();
    crate::time::parse_timestamp(s)
        .ok_or_else(|| format!("timestamp '{}' is neither a number nor a date", shown(s.as_bytes())))
}

/// Picks the format of an interaction file from its name and first lines.
pub fn detect(path: &str, head: &[Vec<u8>]) -> Result<Format> {
    let name = std::path::Path::new(path).file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let stem = name.trim_end_matches(".gz");
    let Some(first) = head.first() else {
        return Err(Error::Input(format!("{path}: the file is empty")));
    };
    let first_text = String::from_utf8_lossy(first);
    if stem.ends_with(".inter") {
        return Ok(Format::RecBole);
    }
    if stem == "u.data" || stem == "ratings.dat" || first_text.contains("::") {
        return Ok(Format::MovieLens);
    }
    if first_text.trim_start().starts_with('{') {
        if first_text.contains("business_id") && first_text.contains("user_id") {
            return Ok(Format::Yelp);
        }
        if first_text.contains("\"parent_asin\"") && first_text.contains("\"user_id\"") {
            return Ok(Format::Amazon2023);
        }
        if first_text.contains("reviewerID") || first_text.contains("asin") {
            return Ok(Format::Amazon);
        }
        return Err(Error::Input(format!(
            "{path}: JSON lines that are neither Amazon nor Yelp reviews; pass --format"
        )));
    }
    if stem.ends_with(".csv") || first_text.contains(',') {
        return Ok(Format::Csv);
    }
    if stem.ends_with(".tsv") || first_text.contains('\t') {
        // A tab-separated file whose first line is all numbers has no header: MovieLens-like u.data.
        let numeric = first_text.split('\t').all(|f| f.trim().parse::<f64>().is_ok());
        return Ok(if numeric { Format::MovieLens } else { Format::Tsv });
    }
    if stem == "inter.txt"
        || head.iter().all(|l| l.split(u8::is_ascii_whitespace).filter(|t| !t.is_empty()).count() == 2)
    {
        return Ok(Format::LlmEsr);
    }
    Ok(Format::SeqLines)
}

/// Builds the parser for a file of the given format from its first line (the header, where there is one).
pub fn parser_for(
    format: Format,
    path: &str,
    first_line: &[u8],
    columns: &ColumnSpec,
) -> Result<Box<dyn RecordParser>> {
    let err = |msg: String| Error::Parse { file: path.to_string(), line: 1, msg };
    Ok(match format {
        Format::Csv | Format::Tsv | Format::RecBole => {
            let sep = if format == Format::Csv { b',' } else { b'\t' };
            Box::new(Delimited::from_header(Sep::Byte(sep), format == Format::Csv, first_line, columns).map_err(err)?)
        }
        Format::MovieLens => {
            let sep = if first_line.windows(2).any(|w| w == b"::") { Sep::DoubleColon } else { Sep::Whitespace };
            Box::new(Delimited::movielens(sep))
        }
        Format::LlmEsr => Box::new(Delimited::llmesr()),
        Format::SeqLines => Box::new(delimited::SeqLines),
        Format::Amazon => Box::new(AmazonReviews),
        Format::Amazon2023 => Box::new(Amazon2023Reviews),
        Format::Yelp => Box::new(YelpReviews),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<Vec<u8>> {
        s.lines().map(|l| l.as_bytes().to_vec()).collect()
    }

    #[test]
    fn long_tokens_are_shortened_in_messages() {
        let long = "9".repeat(100);
        let msg = check_id("user", long.as_bytes(), true).unwrap_err();
        assert_eq!(msg, format!("user id {}... (100 bytes) does not fit in 64 bits", "9".repeat(40)));
        assert_eq!(shown("é".repeat(41).as_bytes()), format!("{}... (82 bytes)", "é".repeat(40)));
        assert_eq!(shown(b"short"), "short");
    }

    #[test]
    fn detection() {
        assert_eq!(detect("a.inter", &lines("user_id:token\titem_id:token")).unwrap(), Format::RecBole);
        assert_eq!(detect("u.data", &lines("1\t2\t3\t4")).unwrap(), Format::MovieLens);
        assert_eq!(detect("x", &lines("1::2::3::4")).unwrap(), Format::MovieLens);
        assert_eq!(detect("x.json", &lines(r#"{"reviewerID": "a", "asin": "b"}"#)).unwrap(), Format::Amazon);
        assert_eq!(detect("x.json", &lines(r#"{"user_id": "a", "business_id": "b"}"#)).unwrap(), Format::Yelp);
        let amazon_2023 = r#"{"rating": 5.0, "asin": "B1", "parent_asin": "P1", "user_id": "a", "timestamp": 1}"#;
        assert_eq!(detect("Beauty.jsonl", &lines(amazon_2023)).unwrap(), Format::Amazon2023);
        assert_eq!(detect("x.txt", &lines("user,item\n1,2")).unwrap(), Format::Csv);
        assert_eq!(detect("x.txt", &lines("user\titem\n1\t2")).unwrap(), Format::Tsv);
        assert_eq!(detect("x.txt", &lines("1 2\n1 3")).unwrap(), Format::LlmEsr);
        assert_eq!(detect("x.txt", &lines("1 2 3\n2 3")).unwrap(), Format::SeqLines);
        assert!(detect("x.txt", &[]).is_err());
    }
}
