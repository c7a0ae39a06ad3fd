//! JSON-lines review dumps: Amazon 2014/2018 (`reviewerID`, `asin`, `overall`, `unixReviewTime`),
//! Amazon Reviews 2023 (`user_id`, `parent_asin`, `rating`, `timestamp` in milliseconds) and Yelp
//! (`user_id`, `business_id`, `stars`, `date`). Lines of 2014 dumps that are Python dict literals go
//! through the safe literal parser.

use super::{check_id, Chunk, RecordParser};

/// A JSON number beyond float32 would be stored as inf (serde narrows f64 to f32).
fn finite(rating: f32, field: &str) -> Result<f32, String> {
    if rating.is_finite() {
        Ok(rating)
    } else {
        Err(format!("'{field}' rating is out of range"))
    }
}
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Deserialize)]
struct AmazonRow<'a> {
    #[serde(rename = "reviewerID", borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    asin: Cow<'a, str>,
    overall: Option<f32>,
    #[serde(rename = "unixReviewTime")]
    unix_time: Option<i64>,
    #[serde(rename = "reviewTime", borrow)]
    review_time: Option<Cow<'a, str>>,
}

fn amazon_row(line: &[u8]) -> Result<AmazonRow<'_>, String> {
    match serde_json::from_slice::<AmazonRow>(line) {
        Ok(r) => Ok(r),
        Err(e) if line.starts_with(b"{'") => {
            let text = std::str::from_utf8(line).map_err(|_| "not valid UTF-8".to_string())?;
            let v = crate::pyliteral::parse(text)?;
            AmazonRow::deserialize(v)
                .map(|r| AmazonRow {
                    user: Cow::Owned(r.user.into_owned()),
                    asin: Cow::Owned(r.asin.into_owned()),
                    review_time: r.review_time.map(|t| Cow::Owned(t.into_owned())),
                    ..r
                })
                .map_err(|e2| format!("bad Amazon review ({e}; as a Python literal: {e2})"))
        }
        Err(e) => Err(format!("bad Amazon review: {e}")),
    }
}

pub struct AmazonReviews;

impl RecordParser for AmazonReviews {
    fn has_time(&self) -> bool {
        true
    }
    fn has_rating(&self) -> bool {
        true
    }
    fn parse(&self, line: &[u8], out: &mut Chunk) -> Result<(), String> {
        let r = amazon_row(line)?;
        let time = match (r.unix_time, &r.review_time) {
            (Some(t), _) => t,
            (None, Some(d)) => crate::time::parse_date(d).ok_or_else(|| format!("reviewTime '{d}' is not a date"))?,
            (None, None) => return Err("no unixReviewTime or reviewTime".into()),
        };
        let rating = finite(r.overall.ok_or("no 'overall' rating")?, "overall")?;
        check_id("user", r.user.as_bytes(), false)?;
        check_id("item", r.asin.as_bytes(), false)?;
        out.push(r.user.as_bytes(), r.asin.as_bytes(), Some(time), Some(rating));
        Ok(())
    }
}

/// McAuley lab's Amazon Reviews 2023: the item is the product family (`parent_asin`, the key of its
/// metadata and of the published benchmark splits); `timestamp` is in milliseconds and is stored,
/// like every format's times, in whole seconds (floored).
#[derive(Deserialize)]
struct Amazon2023Row<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    parent_asin: Cow<'a, str>,
    rating: f32,
    timestamp: i64,
}

pub struct Amazon2023Reviews;

impl RecordParser for Amazon2023Reviews {
    fn has_time(&self) -> bool {
        true
    }
    fn has_rating(&self) -> bool {
        true
    }
    fn parse(&self, line: &[u8], out: &mut Chunk) -> Result<(), String> {
        let r: Amazon2023Row = serde_json::from_slice(line).map_err(|e| format!("bad Amazon 2023 review: {e}"))?;
        check_id("user", r.user_id.as_bytes(), false)?;
        check_id("item", r.parent_asin.as_bytes(), false)?;
        let time = r.timestamp.div_euclid(1000);
        out.push(r.user_id.as_bytes(), r.parent_asin.as_bytes(), Some(time), Some(finite(r.rating, "rating")?));
        Ok(())
    }
}

#[derive(Deserialize)]
struct YelpRow<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    business_id: Cow<'a, str>,
    stars: f32,
    #[serde(borrow)]
    date: Cow<'a, str>,
}

pub struct YelpReviews;

impl RecordParser for YelpReviews {
    fn has_time(&self) -> bool {
        true
    }
    fn has_rating(&self) -> bool {
        true
    }
    fn parse(&self, line: &[u8], out: &mut Chunk) -> Result<(), String> {
        let r: YelpRow = serde_json::from_slice(line).map_err(|e| format!("bad Yelp review: {e}"))?;
        let time = crate::time::parse_date(&r.date).ok_or_else(|| format!("date '{}' is not a date", r.date))?;
        check_id("user", r.user_id.as_bytes(), false)?;
        check_id("item", r.business_id.as_bytes(), false)?;
        out.push(r.user_id.as_bytes(), r.business_id.as_bytes(), Some(time), Some(finite(r.stars, "stars")?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amazon_both_years() {
        let mut c = Chunk::new();
        let l2018 = br#"{"overall": 5.0, "verified": true, "reviewTime": "09 1, 2016", "reviewerID": "A1", "asin": "B0", "unixReviewTime": 1472688000}"#;
        AmazonReviews.parse(l2018, &mut c).unwrap();
        let l2014 = br#"{'reviewerID': 'A2', 'asin': 'B\'1', 'overall': 4.0, 'reviewTime': '01 2, 2014'}"#;
        AmazonReviews.parse(l2014, &mut c).unwrap();
        assert_eq!(c.times, vec![1472688000, 1388620800]);
        assert_eq!(c.ratings, vec![5.0, 4.0]);
        assert!(AmazonReviews.parse(br#"{"reviewerID": "A1"}"#, &mut c).is_err());
    }

    #[test]
    fn amazon_2023() {
        let mut c = Chunk::new();
        let l = br#"{"rating": 4.0, "title": "Ok", "text": "Fine \"gel\"", "images": [], "asin": "B1", "parent_asin": "P1", "user_id": "AG1", "timestamp": 1588687728923, "helpful_vote": 0, "verified_purchase": true}"#;
        Amazon2023Reviews.parse(l, &mut c).unwrap();
        assert_eq!((c.times.clone(), c.ratings.clone()), (vec![1588687728], vec![4.0]));
        assert_eq!(c.item_keys.keys_for_test(), [b"P1".to_vec().into_boxed_slice()]); // the product family
        let no_time = br#"{"rating": 4.0, "parent_asin": "P1", "user_id": "AG1"}"#;
        assert!(Amazon2023Reviews.parse(no_time, &mut c).unwrap_err().contains("missing field `timestamp`"));
    }

    #[test]
    fn yelp() {
        let mut c = Chunk::new();
        let l = br#"{"review_id":"r","user_id":"u","business_id":"b","stars":4.0,"text":"Good \"x\"","date":"2016-07-30 17:04:43"}"#;
        YelpReviews.parse(l, &mut c).unwrap();
        assert_eq!(c.times, vec![1469898283]);
        assert!(YelpReviews.parse(br#"{"user_id":"u","business_id":"b","stars":4.0,"date":"July"}"#, &mut c).is_err());
        let huge = br#"{"user_id":"u","business_id":"b","stars":1e39,"date":"2016-07-30"}"#;
        assert_eq!(YelpReviews.parse(huge, &mut c).unwrap_err(), "'stars' rating is out of range");
    }
}
