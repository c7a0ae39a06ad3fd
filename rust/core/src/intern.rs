//! Interning of raw id tokens (user and item ids as they appear in the input) to dense u32 codes.
//! Canonical decimal tokens (the common case) are kept as numbers: hashing a u64 is much cheaper
//! than hashing bytes, and ordering them needs no parsing later.

use rustc_hash::FxHashMap;
use std::borrow::Cow;

/// A raw id: a canonical decimal (no sign, no leading zero, at most 19 digits) or any other bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key<'a> {
    Num(u64),
    Text(Cow<'a, [u8]>),
}

/// The rule that makes an id numeric: a canonical decimal (no sign, no leading zero) below 2^31.
/// Every other token is a text id (larger numbers still sort as numbers, see [`key_order`]).
pub fn numeric_id(t: &[u8]) -> Option<RawId> {
    if t.len() > 1 && t[0] == b'0' {
        return None;
    }
    crate::swar::parse_digits(t).filter(|v| *v < TEXT_TAG as u64).map(|v| v as RawId)
}

impl<'a> Key<'a> {
    #[cfg(test)]
    pub fn new(token: Cow<'a, [u8]>) -> Self {
        match numeric_id(&token) {
            Some(v) => Key::Num(v as u64),
            None => Key::Text(token),
        }
    }
    /// Appends the id as text.
    pub fn write_to(&self, out: &mut String) {
        match self {
            Key::Num(v) => {
                use std::fmt::Write;
                let _ = write!(out, "{v}");
            }
            Key::Text(t) => out.push_str(&String::from_utf8_lossy(t)),
        }
    }
    pub fn to_text(&self) -> String {
        match self {
            Key::Num(v) => v.to_string(),
            Key::Text(t) => String::from_utf8_lossy(t).into_owned(),
        }
    }
}

/// Raw ids by new id (1..=len), in one buffer: millions of small strings would each be an allocation.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IdList {
    text: String,
    /// `ends[i]` is where id `i` ends; `ends[0] = 0` stands for the padding id 0.
    ends: Vec<usize>,
}

impl IdList {
    pub fn new() -> Self {
        IdList { text: String::new(), ends: vec![0] }
    }
    /// Appends one id, written by `write` into the buffer.
    pub fn push_with(&mut self, write: impl FnOnce(&mut String)) {
        write(&mut self.text);
        self.ends.push(self.text.len());
    }
    /// Number of ids (padding excluded).
    pub fn len(&self) -> usize {
        self.ends.len() - 1
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The raw id of new id `id` (1-based).
    pub fn get(&self, id: usize) -> &str {
        &self.text[self.ends[id - 1]..self.ends[id]]
    }
    /// Raw ids of ids 1, 2, ...
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.ends.windows(2).map(|w| &self.text[w[0]..w[1]])
    }
}

/// Ids below this are interned through a direct-address table instead of a hash map.
const DENSE_LIMIT: u64 = 1 << 24;

const ABSENT: u32 = u32::MAX;

/// Numeric ids used as their own codes stay below this and below twice the number of rows.
const IDENTITY_LIMIT: u64 = 1 << 20;

/// Maps the whole log's ids to dense codes.
///
/// While every id is a canonical number of modest size (the common case), an id's code is the
/// number itself: no hashing, and code order is id order. The first text id, or a number too large
/// for that, switches to interning in order of first appearance (and recodes the rows seen so far).
#[derive(Debug)]
pub struct Interner {
    /// `Some(1 + largest id)` while codes are the ids themselves.
    identity: Option<usize>,
    dense: Vec<u32>,
    nums: FxHashMap<u64, u32>,
    texts: FxHashMap<Box<[u8]>, u32>,
    keys: Vec<Key<'static>>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            identity: Some(0),
            dense: Vec::new(),
            nums: FxHashMap::default(),
            texts: FxHashMap::default(),
            keys: Vec::new(),
        }
    }
}

impl Interner {
    /// Size of the code space (codes without rows included).
    pub fn len(&self) -> usize {
        self.identity.unwrap_or(self.keys.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// All codes, sorted in the natural order of their ids (see [`key_order`]).
    pub fn order(&self) -> Vec<u32> {
        match self.identity {
            Some(n) => (0..n as u32).collect(),
            None => key_order(&self.keys),
        }
    }
    /// Appends the id of `code` as text.
    pub fn write_key(&self, code: u32, out: &mut String) {
        match self.identity {
            Some(_) => Key::Num(code as u64).write_to(out),
            None => self.keys[code as usize].write_to(out),
        }
    }

    /// Codes of a block's raw ids, appended to `rows` (the log's column of codes so far).
    pub fn intern_rows(&mut self, raw: &[RawId], text: &TextInterner, rows: &mut Vec<u32>) {
        if let Some(n) = self.identity {
            let max = raw.iter().copied().max().unwrap_or(0);
            let limit = IDENTITY_LIMIT.max(2 * (rows.len() + raw.len()) as u64);
            if (max as u64) < limit {
                self.identity = Some(n.max(max as usize + 1));
                rows.extend_from_slice(raw); // the ids are the codes
                return;
            }
            self.identity = None;
            for code in rows.iter_mut() {
                *code = self.intern_num(*code as u64);
            }
        }
        let text_codes: Vec<u32> = text.keys.iter().map(|k| self.intern_text(k)).collect();
        rows.extend(raw.iter().map(|&r| {
            if r & TEXT_TAG != 0 {
                text_codes[(r & !TEXT_TAG) as usize]
            } else {
                self.intern_num(r as u64)
            }
        }));
    }

    fn intern_num(&mut self, v: u64) -> u32 {
        let next = self.keys.len() as u32;
        if v < DENSE_LIMIT {
            let i = v as usize;
            if i >= self.dense.len() {
                self.dense.resize((i + 1).next_power_of_two(), ABSENT);
            }
            if self.dense[i] != ABSENT {
                return self.dense[i];
            }
            self.dense[i] = next;
        } else {
            let code = *self.nums.entry(v).or_insert(next);
            if code != next {
                return code;
            }
        }
        self.keys.push(Key::Num(v));
        next
    }

    fn intern_text(&mut self, t: &[u8]) -> u32 {
        if let Some(&c) = self.texts.get(t) {
            return c;
        }
        let next = self.keys.len() as u32;
        self.texts.insert(t.into(), next);
        self.keys.push(Key::Text(Cow::Owned(t.to_vec())));
        next
    }
}

/// A raw id as parsed in a block: a canonical number below 2^31, or (high bit set) the code of a text
/// key in the block's [`TextInterner`] (larger numbers are kept as text, and still sort as numbers).
/// Numbers skip hashing in the parallel parse, and while they are the codes themselves the merge is
/// a copy.
pub type RawId = u32;
pub const TEXT_TAG: RawId = 1 << 31;

/// Interns the non-numeric ids of one block (owned, so a parsed block can outlive its text).
#[derive(Default)]
pub struct TextInterner {
    map: FxHashMap<Box<[u8]>, u32>,
    keys: Vec<Box<[u8]>>,
}

impl TextInterner {
    #[cfg(test)]
    pub fn keys_for_test(&self) -> &[Box<[u8]>] {
        &self.keys
    }
    pub fn clear(&mut self) {
        self.map.clear();
        self.keys.clear();
    }
    pub fn raw_id(&mut self, token: &[u8]) -> RawId {
        if let Some(v) = numeric_id(token) {
            return v;
        }
        let code = match self.map.get(token) {
            Some(&c) => c,
            None => {
                let c = self.keys.len() as u32;
                self.keys.push(token.into());
                self.map.insert(token.into(), c);
                c
            }
        };
        TEXT_TAG | code
    }
}

/// Codes sorted in the natural order of their ids: numeric when every key is an unsigned integer
/// (of any length), bytewise otherwise (ties of equal numbers such as "01" and "1" broken bytewise).
pub fn key_order(keys: &[Key]) -> Vec<u32> {
    let numeric: Option<Vec<(u128, u32)>> = keys
        .iter()
        .zip(0u32..)
        .map(|(k, code)| match k {
            Key::Num(v) => Some((*v as u128, code)),
            Key::Text(t) => parse_uint(t).map(|v| (v, code)),
        })
        .collect();
    let text = || keys.iter().map(Key::to_text).collect::<Vec<String>>();
    match numeric {
        Some(mut pairs) => {
            // Sorting (value, code) pairs directly is cache-friendly; equal values ("01", "1") are
            // rare and are then ordered bytewise.
            pairs.sort_unstable();
            let mut order: Vec<u32> = pairs.iter().map(|&(_, c)| c).collect();
            let mut first = 0;
            for run in pairs.chunk_by(|a, b| a.0 == b.0) {
                if run.len() > 1 {
                    order[first..first + run.len()].sort_by_key(|&c| keys[c as usize].to_text());
                }
                first += run.len();
            }
            order
        }
        None => {
            let text = text();
            let mut order: Vec<u32> = (0..keys.len() as u32).collect();
            if text.iter().all(|t| is_digits(t.as_bytes())) {
                // Integers too long for u128 (39+ digits): by value (significant digits: length,
                // then bytes), ties bytewise.
                let by_value = |t: &str| {
                    let significant = t.trim_start_matches('0');
                    (significant.len(), significant.as_bytes().to_vec(), t.as_bytes().to_vec())
                };
                order.sort_by_cached_key(|&c| by_value(&text[c as usize]));
            } else {
                order.sort_unstable_by(|&a, &b| text[a as usize].as_bytes().cmp(text[b as usize].as_bytes()));
            }
            order
        }
    }
}

fn is_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

fn parse_uint(s: &[u8]) -> Option<u128> {
    if s.len() > 38 || !is_digits(s) {
        return None;
    }
    Some(s.iter().fold(0u128, |acc, &d| acc * 10 + (d - b'0') as u128))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ids: &[&str]) -> Vec<Key<'static>> {
        ids.iter().map(|s| Key::new(Cow::Owned(s.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn ranks_numeric_and_text() {
        assert_eq!(key_order(&keys(&["10", "9", "100"])), vec![1, 0, 2]);
        assert_eq!(key_order(&keys(&["b", "a", "10"])), vec![2, 1, 0]);
        assert_eq!(key_order(&keys(&["01", "1", "0", "99999999999999999999"])), vec![2, 0, 1, 3]);
        // 39+ digits: still by value, not bytewise ("9" before "10...0").
        let long = format!("1{}", "0".repeat(40));
        assert_eq!(key_order(&keys(&[&long, "9", "010", "10"])), vec![1, 2, 3, 0]);
    }

    fn codes(g: &mut Interner, ids: &[&str], rows: &mut Vec<u32>) {
        let mut t = TextInterner::default();
        let raw: Vec<RawId> = ids.iter().map(|s| t.raw_id(s.as_bytes())).collect();
        g.intern_rows(&raw, &t, rows);
    }

    #[test]
    fn identity_codes_then_interning() {
        let mut g = Interner::default();
        let mut rows = Vec::new();
        codes(&mut g, &["7", "3", "7"], &mut rows);
        assert_eq!((rows.clone(), g.len()), (vec![7, 3, 7], 8)); // codes are the ids
        codes(&mut g, &["x", "07", "3", "99999999999999999999"], &mut rows);
        // Switched to interning: first appearance order, rows seen before recoded.
        assert_eq!(rows, vec![0, 1, 0, 2, 3, 1, 4]);
        assert_eq!(g.len(), 5);
        let mut s = String::new();
        g.write_key(3, &mut s);
        assert_eq!(s, "07");
        assert_eq!(g.order(), vec![3, 1, 0, 4, 2]); // bytewise: a text id is present
        let mut big = Interner::default();
        let mut rows = Vec::new();
        codes(&mut big, &["5000000"], &mut rows); // too large for identity codes in a tiny log
        assert_eq!((rows, big.len()), (vec![0], 1));
    }
}
