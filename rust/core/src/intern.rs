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

fn canonical_u64(t: &[u8]) -> Option<u64> {
    if t.is_empty() || t.len() > 19 || (t.len() > 1 && t[0] == b'0') {
        return None;
    }
    let mut v = 0u64;
    for &d in t {
        let digit = d.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        v = v * 10 + digit as u64;
    }
    Some(v)
}

impl<'a> Key<'a> {
    pub fn new(token: Cow<'a, [u8]>) -> Self {
        match canonical_u64(&token).filter(|v| *v < TEXT_TAG) {
            Some(v) => Key::Num(v),
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
    pub fn push(&mut self, key: &Key) {
        key.write_to(&mut self.text);
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

/// Maps keys to codes in order of first appearance (the whole log's ids).
#[derive(Default, Debug)]
pub struct Interner {
    dense: Vec<u32>,
    nums: FxHashMap<u64, u32>,
    texts: FxHashMap<Box<[u8]>, u32>,
    keys: Vec<Key<'static>>,
}

impl Interner {
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    pub fn keys(&self) -> &[Key<'static>] {
        &self.keys
    }
    pub fn intern_num(&mut self, v: u64) -> u32 {
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
    pub fn intern_text(&mut self, t: &[u8]) -> u32 {
        if let Some(&c) = self.texts.get(t) {
            return c;
        }
        let next = self.keys.len() as u32;
        self.texts.insert(t.into(), next);
        self.keys.push(Key::Text(Cow::Owned(t.to_vec())));
        next
    }
    pub fn intern(&mut self, key: &Key) -> u32 {
        match key {
            Key::Num(v) => self.intern_num(*v),
            Key::Text(t) => self.intern_text(t),
        }
    }
}

/// A raw id as parsed in a block: a number below 2^63, or (high bit set) the code of a text key in
/// the block's [`TextInterner`]. Numbers skip hashing in the parallel parse; the merge interns them.
pub type RawId = u64;
pub const TEXT_TAG: u64 = 1 << 63;

/// Interns the non-numeric ids of one block (owned, so a parsed block can outlive its text).
#[derive(Default)]
pub struct TextInterner {
    map: FxHashMap<Box<[u8]>, u32>,
    keys: Vec<Box<[u8]>>,
}

impl TextInterner {
    pub fn clear(&mut self) {
        self.map.clear();
        self.keys.clear();
    }
    pub fn raw_id(&mut self, token: &[u8]) -> RawId {
        if let Some(v) = canonical_u64(token).filter(|v| *v < TEXT_TAG) {
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
        TEXT_TAG | code as u64
    }
    /// Global code of each of this block's text keys.
    pub fn merge_into(&self, global: &mut Interner) -> Vec<u32> {
        self.keys.iter().map(|k| global.intern_text(k)).collect()
    }
}

/// Global codes of a block's raw ids, in row order.
pub fn intern_raw(raw: &[RawId], text_codes: &[u32], global: &mut Interner, out: &mut Vec<u32>) {
    out.extend(raw.iter().map(|&r| {
        if r & TEXT_TAG != 0 {
            text_codes[(r & !TEXT_TAG) as usize]
        } else {
            global.intern_num(r)
        }
    }));
}

/// Codes sorted in the natural order of their ids: numeric when every key is an unsigned integer,
/// bytewise otherwise (ties of equal numbers such as "01" and "1" broken bytewise).
pub fn key_order(keys: &[Key]) -> Vec<u32> {
    let numeric: Option<Vec<(u128, u32)>> = keys
        .iter()
        .zip(0u32..)
        .map(|(k, code)| match k {
            Key::Num(v) => Some((*v as u128, code)),
            Key::Text(t) => parse_uint(t).map(|v| (v, code)),
        })
        .collect();
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
            let text: Vec<String> = keys.iter().map(Key::to_text).collect();
            let mut order: Vec<u32> = (0..keys.len() as u32).collect();
            order.sort_unstable_by(|&a, &b| text[a as usize].as_bytes().cmp(text[b as usize].as_bytes()));
            order
        }
    }
}

fn parse_uint(s: &[u8]) -> Option<u128> {
    if s.is_empty() || s.len() > 38 || !s.iter().all(u8::is_ascii_digit) {
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
    }

    #[test]
    fn raw_ids_merge() {
        let mut g = Interner::default();
        g.intern_text(b"x");
        let mut l = TextInterner::default();
        let raw: Vec<RawId> =
            ["7", "x", "07", "7", "99999999999999999999", "20000000"].iter().map(|t| l.raw_id(t.as_bytes())).collect();
        assert_eq!(raw[0], 7);
        let codes = l.merge_into(&mut g);
        let mut out = Vec::new();
        intern_raw(&raw, &codes, &mut g, &mut out);
        assert_eq!(out, vec![3, 0, 1, 3, 2, 4]);
        assert_eq!(g.keys()[3], Key::Num(7));
        assert_eq!(g.intern(&Key::Num(20000000)), 4);
        assert_eq!(g.len(), 5);
    }
}
