//! Interning of raw id tokens (user and item ids as they appear in the input) to dense u32 codes.

use rustc_hash::FxHashMap;
use std::borrow::Cow;

/// Owns its keys; used for the whole log.
#[derive(Default, Debug)]
pub struct Interner {
    map: FxHashMap<Box<[u8]>, u32>,
    keys: Vec<Box<[u8]>>,
}

impl Interner {
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    pub fn keys(&self) -> &[Box<[u8]>] {
        &self.keys
    }
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        self.map.get(key).copied()
    }
    pub fn intern(&mut self, key: &[u8]) -> u32 {
        if let Some(&code) = self.map.get(key) {
            return code;
        }
        let code = self.keys.len() as u32;
        let owned: Box<[u8]> = key.into();
        self.keys.push(owned.clone());
        self.map.insert(owned, code);
        code
    }
}

/// Borrows its keys from one block of input; merged into an [`Interner`] afterwards.
#[derive(Default)]
pub struct LocalInterner<'a> {
    map: FxHashMap<Cow<'a, [u8]>, u32>,
    keys: Vec<Cow<'a, [u8]>>,
}

impl<'a> LocalInterner<'a> {
    pub fn intern(&mut self, key: Cow<'a, [u8]>) -> u32 {
        if let Some(&code) = self.map.get(key.as_ref()) {
            return code;
        }
        let code = self.keys.len() as u32;
        self.keys.push(key.clone());
        self.map.insert(key, code);
        code
    }
    /// Global code of every local code.
    pub fn merge_into(&self, global: &mut Interner) -> Vec<u32> {
        self.keys.iter().map(|k| global.intern(k)).collect()
    }
}

/// Rank of every key in the natural order of ids: numeric when every key is an unsigned integer,
/// bytewise otherwise (ties of equal numbers such as "01" and "1" broken bytewise).
pub fn key_ranks(keys: &[Box<[u8]>]) -> Vec<u32> {
    let numeric: Option<Vec<u128>> = keys.iter().map(|k| parse_uint(k)).collect();
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    match numeric {
        Some(values) => order.sort_unstable_by(|&a, &b| {
            (values[a as usize], &keys[a as usize]).cmp(&(values[b as usize], &keys[b as usize]))
        }),
        None => order.sort_unstable_by(|&a, &b| keys[a as usize].cmp(&keys[b as usize])),
    }
    let mut rank = vec![0u32; keys.len()];
    for (r, &code) in order.iter().enumerate() {
        rank[code as usize] = r as u32;
    }
    rank
}

fn parse_uint(s: &[u8]) -> Option<u128> {
    if s.is_empty() || s.len() > 38 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        s.iter()
            .fold(0u128, |acc, &d| acc * 10 + (d - b'0') as u128),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_numeric_and_text() {
        let keys: Vec<Box<[u8]>> = ["10", "9", "100"]
            .iter()
            .map(|s| s.as_bytes().into())
            .collect();
        assert_eq!(key_ranks(&keys), vec![1, 0, 2]);
        let keys: Vec<Box<[u8]>> = ["b", "a", "10"]
            .iter()
            .map(|s| s.as_bytes().into())
            .collect();
        assert_eq!(key_ranks(&keys), vec![2, 1, 0]);
    }

    #[test]
    fn local_merge() {
        let mut g = Interner::default();
        g.intern(b"x");
        let mut l = LocalInterner::default();
        assert_eq!(l.intern(Cow::Borrowed(b"y")), 0);
        assert_eq!(l.intern(Cow::Borrowed(b"x")), 1);
        assert_eq!(l.intern(Cow::Borrowed(b"y")), 0);
        assert_eq!(l.merge_into(&mut g), vec![1, 0]);
        assert_eq!(g.len(), 2);
    }
}
