//! A safe parser for the Python literals of the 2014 Amazon metadata dumps (`{'asin': '...', ...}`):
//! dicts, lists, tuples, sets, strings (single, double, triple quoted, with escapes and `r`/`u`/`b`
//! prefixes), numbers, `True`/`False`/`None`. Nothing is evaluated; depth is bounded.

use serde_json::{Map, Number, Value};

const MAX_DEPTH: usize = 64;

pub fn parse(text: &str) -> Result<Value, String> {
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected text after the literal"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("invalid Python literal at column {}: {what}", self.i + 1)
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.ws();
        match self.peek() {
            None => Err(self.err("unexpected end")),
            Some(b'{') => self.dict(depth),
            Some(b'[') => Ok(Value::Array(self.seq(b']', depth)?)),
            Some(b'(') => Ok(Value::Array(self.seq(b')', depth)?)),
            Some(b'\'' | b'"') => Ok(Value::String(self.string()?)),
            Some(c) if c.is_ascii_alphabetic() => self.word(),
            Some(_) => self.number(),
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Value, String> {
        self.i += 1;
        let mut map = Map::new();
        if self.eat(b'}') {
            return Ok(Value::Object(map));
        }
        // `{a, b}` is a set: read as a list.
        let first = self.value(depth + 1)?;
        if !self.eat(b':') {
            let mut items = vec![first];
            while self.eat(b',') {
                if self.eat(b'}') {
                    return Ok(Value::Array(items));
                }
                items.push(self.value(depth + 1)?);
            }
            return if self.eat(b'}') { Ok(Value::Array(items)) } else { Err(self.err("expected '}'")) };
        }
        let mut key = first;
        loop {
            let v = self.value(depth + 1)?;
            let k = match key {
                Value::String(s) => s,
                other => other.to_string(),
            };
            map.insert(k, v);
            if self.eat(b'}') {
                return Ok(Value::Object(map));
            }
            if !self.eat(b',') {
                return Err(self.err("expected ',' or '}'"));
            }
            if self.eat(b'}') {
                return Ok(Value::Object(map));
            }
            key = self.value(depth + 1)?;
            if !self.eat(b':') {
                return Err(self.err("expected ':'"));
            }
        }
    }

    fn seq(&mut self, close: u8, depth: usize) -> Result<Vec<Value>, String> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Ok(items);
            }
            items.push(self.value(depth + 1)?);
            if self.eat(close) {
                return Ok(items);
            }
            if !self.eat(b',') {
                return Err(self.err(&format!("expected ',' or '{}'", close as char)));
            }
        }
    }

    fn word(&mut self) -> Result<Value, String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
            self.i += 1;
        }
        match &self.s[start..self.i] {
            b"True" => Ok(Value::Bool(true)),
            b"False" => Ok(Value::Bool(false)),
            b"None" => Ok(Value::Null),
            w if w.len() <= 2 && matches!(self.peek(), Some(b'\'' | b'"')) => {
                // String prefixes r, u, b, br, rb: raw strings keep backslashes.
                let raw = w.iter().any(|c| c.eq_ignore_ascii_case(&b'r'));
                if !w.iter().all(|c| b"rRuUbB".contains(c)) {
                    self.i = start;
                    return Err(self.err("unknown string prefix"));
                }
                if raw {
                    self.raw_string().map(Value::String)
                } else {
                    self.string().map(Value::String)
                }
            }
            _ => {
                self.i = start;
                Err(self.err("names are not literals"))
            }
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || b"+-._".contains(&c)) {
            self.i += 1;
        }
        let text: String = String::from_utf8_lossy(&self.s[start..self.i]).replace('_', "");
        if let Ok(v) = text.parse::<i64>() {
            return Ok(Value::Number(v.into()));
        }
        match text.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Ok(Value::Number(n)),
            None => {
                self.i = start;
                Err(self.err("expected a value"))
            }
        }
    }

    /// Opening quote run: returns (quote byte, triple?).
    fn open_quote(&mut self) -> (u8, bool) {
        let q = self.s[self.i];
        let triple = self.s[self.i..].starts_with(&[q, q, q]);
        self.i += if triple { 3 } else { 1 };
        (q, triple)
    }

    fn at_close(&self, q: u8, triple: bool) -> bool {
        if triple {
            self.s[self.i..].starts_with(&[q, q, q])
        } else {
            self.s[self.i] == q
        }
    }

    fn raw_string(&mut self) -> Result<String, String> {
        let (q, triple) = self.open_quote();
        let start = self.i;
        while self.i < self.s.len() {
            if self.s[self.i] == b'\\' {
                self.i += 2;
                continue;
            }
            if self.at_close(q, triple) {
                let out = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += if triple { 3 } else { 1 };
                return Ok(out);
            }
            self.i += 1;
        }
        Err(self.err("unterminated string"))
    }

    fn string(&mut self) -> Result<String, String> {
        let (q, triple) = self.open_quote();
        let mut out: Vec<u8> = Vec::new();
        while self.i < self.s.len() {
            let c = self.s[self.i];
            if c != b'\\' {
                if self.at_close(q, triple) {
                    self.i += if triple { 3 } else { 1 };
                    return String::from_utf8(out).map_err(|_| self.err("string is not valid UTF-8"));
                }
                out.push(c);
                self.i += 1;
                continue;
            }
            let Some(&e) = self.s.get(self.i + 1) else {
                break;
            };
            self.i += 2;
            let simple = match e {
                b'n' => Some(b'\n'),
                b't' => Some(b'\t'),
                b'r' => Some(b'\r'),
                b'0' => Some(0),
                b'a' => Some(7),
                b'b' => Some(8),
                b'f' => Some(12),
                b'v' => Some(11),
                b'\\' | b'\'' | b'"' => Some(e),
                b'\n' => continue,
                _ => None,
            };
            if let Some(b) = simple {
                out.push(b);
                continue;
            }
            let digits = match e {
                b'x' => 2,
                b'u' => 4,
                b'U' => 8,
                _ => {
                    out.extend_from_slice(&[b'\\', e]);
                    continue;
                }
            };
            let hex = self.s.get(self.i..self.i + digits).ok_or_else(|| self.err("truncated escape"))?;
            let code = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or_else(|| self.err("bad escape"))?;
            self.i += digits;
            let ch = char::from_u32(code).unwrap_or('\u{FFFD}');
            out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
        }
        Err(self.err("unterminated string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amazon_2014_meta_line() {
        let line = r#"{'asin': '0205616461', 'description': 'It\'s "great"\n\xe9', 'title': u'Bio', 'price': 12.5, 'salesRank': {'Beauty': 10}, 'categories': [['Beauty', 'Skin Care']], 'x': (1, -2.5e3), 'ok': True, 'no': None}"#;
        let v = parse(line).unwrap();
        assert_eq!(
            v,
            json!({"asin": "0205616461", "description": "It's \"great\"\n\u{e9}", "title": "Bio", "price": 12.5,
                   "salesRank": {"Beauty": 10}, "categories": [["Beauty", "Skin Care"]], "x": [1, -2500.0],
                   "ok": true, "no": null})
        );
    }

    #[test]
    fn rejects_code() {
        assert!(parse("__import__('os').system('true')").is_err());
        assert!(parse("{'a': open('x')}").is_err());
        assert!(parse("{'a': 1").is_err());
        assert!(parse(&"[".repeat(1000)).is_err());
        assert!(parse("'abc").is_err());
    }
}
