//! Historical logs from the simulated shop, for `bandit evaluate` and
//! `bandit bootstrap`: random visitors shown one random product at a random
//! time in the 90 days before 2026-01-01, the response drawn from the hidden
//! click model, in time order.

use std::fmt::Write as _;

use crate::lab::rng::Rng;
use crate::lab::shop::{Catalogue, Category, Tastes, Visit, FEATURE_NAMES};

/// 2026-01-01T00:00:00Z, the end of the generated period.
const END_UNIX_SECONDS: i64 = 1_767_225_600;
const DAYS: i64 = 90;

/// (log CSV, items CSV) for `events` events.
#[must_use]
pub fn generate_log(events: usize, seed: u64) -> (String, String) {
    let catalogue = Catalogue::generate(seed);
    let mut rng = Rng::new(seed);
    let start = END_UNIX_SECONDS - DAYS * 86_400;
    let mut times: Vec<i64> = (0..events).map(|_| start + (rng.unit() * (DAYS * 86_400) as f64) as i64).collect();
    times.sort_unstable();
    let mut log = format!("event_id,{},product_id,response\n", FEATURE_NAMES.join(","));
    for (i, &time) in times.iter().enumerate() {
        let visit = Visit::at_time(&mut rng, time);
        let Some(product) = catalogue.products.get(rng.below(catalogue.products.len())) else { continue };
        let response = u8::from(rng.bernoulli(Tastes::Usual.click_probability(&visit, product)));
        let features: Vec<String> = visit.context().iter().map(|v| format!("{v:.6}")).collect();
        let _ = writeln!(log, "e{},{},{},{response}", i + 1, features.join(","), product.id);
    }
    let mut items = String::from("product_id");
    for category in Category::ALL {
        let _ = write!(items, ",category_{}", category.name().replace([' ', '&'], "_").replace("__", "_").replace("__", "_"));
    }
    items.push_str(",is_coffee,price_scaled\n");
    for product in &catalogue.products {
        let _ = write!(items, "{}", product.id);
        for category in Category::ALL {
            let _ = write!(items, ",{}", u8::from(product.category == category));
        }
        let _ = writeln!(items, ",{},{:.6}", u8::from(product.category == Category::Coffee), product.price_scaled);
    }
    (log, items)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn logs_have_the_documented_columns_and_are_deterministic() {
        let (log, items) = generate_log(500, 4);
        assert_eq!(log, generate_log(500, 4).0);
        let header = log.lines().next().unwrap();
        assert!(header.starts_with("event_id,age,latitude,longitude,gender_male,"));
        assert!(header.ends_with(",is_weekend,is_weekday,product_id,response"));
        let parsed = crate::history::parse_log(&log, "log.csv").unwrap();
        assert_eq!(parsed.feature_names.len(), 15);
        assert_eq!(parsed.rows.len(), 500);
        assert!(parsed.rows.iter().any(|r| r.response == 1.0) && parsed.rows.iter().any(|r| r.response == 0.0));
        let ids = crate::history::parse_items(&items, "items.csv").unwrap();
        assert_eq!(ids.len(), Catalogue::generate(4).products.len());
        assert!(items.lines().next().unwrap().ends_with(",is_coffee,price_scaled"));
    }
}
