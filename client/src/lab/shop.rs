//! The simulated shop: a menu of products, users who visit at random times
//! of the week, the 15-feature context a visit produces, and the hidden click
//! model that decides what they click, and how it can drift. Deterministic
//! for a seed.
//!
//! Context layout (all in [0, 1]):
//! | 0 age | 1 latitude | 2 longitude | 3 male | 4 female | 5 organic |
//! 6 facebook | 7 search | 8 email | 9 display | 10 is_morning (6–12) |
//! 11 is_afternoon (12–18) | 12 is_evening (18–24) | 13 is_weekend | 14 is_weekday |
//! Age, latitude and longitude are min-max scaled over their ranges.

use crate::lab::rng::Rng;

/// Number of context features.
pub const DIM: usize = 15;

/// Names of the context features, in order (the columns of generated logs).
pub const FEATURE_NAMES: [&str; DIM] = [
    "age", "latitude", "longitude", "gender_male", "gender_female", "source_organic", "source_facebook",
    "source_search", "source_email", "source_display", "is_morning", "is_afternoon", "is_evening", "is_weekend",
    "is_weekday",
];

/// Product categories of the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    BurgersAndSandwiches,
    Pizzas,
    PubClassics,
    Mexican,
    Coffee,
    Salads,
    Desserts,
    SoftDrinks,
}

impl Category {
    pub const ALL: [Category; 8] = [
        Category::BurgersAndSandwiches,
        Category::Pizzas,
        Category::PubClassics,
        Category::Mexican,
        Category::Coffee,
        Category::Salads,
        Category::Desserts,
        Category::SoftDrinks,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Category::BurgersAndSandwiches => "burgers & sandwiches",
            Category::Pizzas => "pizzas",
            Category::PubClassics => "pub classics",
            Category::Mexican => "mexican",
            Category::Coffee => "coffee",
            Category::Salads => "salads",
            Category::Desserts => "desserts",
            Category::SoftDrinks => "soft drinks",
        }
    }

    /// (count on the menu, dish names, price range in pounds)
    fn menu(self) -> (usize, &'static [&'static str], (f64, f64)) {
        match self {
            Category::BurgersAndSandwiches => (36, &["Cheeseburger", "Club Sandwich", "BLT", "Chicken Burger", "Veggie Burger", "Steak Sandwich"], (6.0, 15.0)),
            Category::Pizzas => (32, &["Margherita", "Pepperoni", "Quattro Formaggi", "Hawaiian", "Diavola", "Funghi"], (8.0, 18.0)),
            Category::PubClassics => (28, &["Fish & Chips", "Bangers & Mash", "Steak Pie", "Sunday Roast", "Ploughman's", "Scampi"], (9.0, 22.0)),
            Category::Mexican => (26, &["Burrito", "Tacos", "Quesadilla", "Nachos", "Enchiladas", "Fajitas"], (7.0, 16.0)),
            Category::Coffee => (26, &["Espresso", "Latte", "Cappuccino", "Flat White", "Americano", "Mocha"], (2.0, 5.0)),
            Category::Salads => (18, &["Caesar Salad", "Greek Salad", "Quinoa Bowl", "Nicoise", "Cobb Salad", "Caprese"], (6.0, 13.0)),
            Category::Desserts => (18, &["Sticky Toffee", "Brownie", "Cheesecake", "Apple Crumble", "Eton Mess", "Tiramisu"], (4.0, 9.0)),
            Category::SoftDrinks => (16, &["Cola", "Lemonade", "Iced Tea", "Orange Juice", "Ginger Beer", "Sparkling Water"], (1.5, 4.0)),
        }
    }
}

/// One product of the menu.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub category: Category,
    pub price: f64,
    /// Price min-max scaled over the catalogue.
    pub price_scaled: f64,
}

/// The menu: about 200 products.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub products: Vec<Product>,
}

impl Catalogue {
    /// The menu for a seed (prices vary with it; names and ids do not).
    #[must_use]
    pub fn generate(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0xC0FF_EE00);
        let mut products = Vec::new();
        for category in Category::ALL {
            let (count, dishes, (low, high)) = category.menu();
            for i in 0..count {
                let dish = dishes.get(i % dishes.len()).copied().unwrap_or("Dish");
                let price = (rng.range(low, high) * 2.0).round() / 2.0;
                products.push(Product {
                    id: format!("{}", products.len() + 1),
                    name: format!("{dish} #{}", i / dishes.len() + 1),
                    category,
                    price,
                    price_scaled: 0.0,
                });
            }
        }
        let (min, max) = products.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.price), hi.max(p.price)));
        for product in &mut products {
            product.price_scaled = if max > min { (product.price - min) / (max - min) } else { 0.0 };
        }
        Self { products }
    }

    #[must_use]
    pub fn ids(&self) -> Vec<String> {
        self.products.iter().map(|p| p.id.clone()).collect()
    }
}

/// Where users come from, with the shares of visits.
pub const TRAFFIC_SOURCES: [(&str, f64); 5] = [("organic", 0.15), ("facebook", 0.06), ("search", 0.70), ("email", 0.05), ("display", 0.04)];
const SEARCH: usize = 2;

/// Age and the city's bounding box (Manchester), for min-max scaling.
const AGE_RANGE: (f64, f64) = (16.0, 70.0);
const LATITUDE_RANGE: (f64, f64) = (53.40, 53.55);
const LONGITUDE_RANGE: (f64, f64) = (-2.35, -2.15);

/// One visitor.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub age: f64,
    pub male: bool,
    pub latitude: f64,
    pub longitude: f64,
    /// Index into [`TRAFFIC_SOURCES`].
    pub source: usize,
}

/// One visit: who, and when in the week.
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub user: User,
    /// 0 = Monday … 6 = Sunday.
    pub day: u8,
    /// Hour of the day, 0–23.
    pub hour: u8,
}

fn scale(value: f64, (low, high): (f64, f64)) -> f64 {
    ((value - low) / (high - low)).clamp(0.0, 1.0)
}

impl Visit {
    /// A random user at a given Unix time (UTC).
    pub fn at_time(rng: &mut Rng, unix_seconds: i64) -> Self {
        let mut visit = Self::random(rng);
        let days = unix_seconds.div_euclid(86_400);
        // 1970-01-01 was a Thursday (day 3 when Monday is 0).
        visit.day = ((days + 3).rem_euclid(7)) as u8;
        visit.hour = (unix_seconds.rem_euclid(86_400) / 3600) as u8;
        visit
    }

    /// A random user at a random time of the week.
    pub fn random(rng: &mut Rng) -> Self {
        let weights: Vec<f64> = TRAFFIC_SOURCES.iter().map(|(_, w)| *w).collect();
        let user = User {
            age: rng.range(AGE_RANGE.0, AGE_RANGE.1).floor(),
            male: rng.bernoulli(0.5),
            latitude: rng.range(LATITUDE_RANGE.0, LATITUDE_RANGE.1),
            longitude: rng.range(LONGITUDE_RANGE.0, LONGITUDE_RANGE.1),
            source: rng.weighted(&weights),
        };
        Self { user, day: rng.below(7) as u8, hour: rng.below(24) as u8 }
    }

    #[must_use]
    pub fn is_morning(&self) -> bool {
        (6..12).contains(&self.hour)
    }

    #[must_use]
    pub fn is_evening(&self) -> bool {
        (18..24).contains(&self.hour)
    }

    #[must_use]
    pub fn is_weekend(&self) -> bool {
        self.day >= 5
    }

    /// The 15 context features (layout in the module documentation).
    #[must_use]
    pub fn context(&self) -> [f64; DIM] {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let u = &self.user;
        let source = |i: usize| flag(u.source == i);
        [
            scale(u.age, AGE_RANGE),
            scale(u.latitude, LATITUDE_RANGE),
            scale(u.longitude, LONGITUDE_RANGE),
            flag(u.male),
            flag(!u.male),
            source(0),
            source(1),
            source(2),
            source(3),
            source(4),
            flag(self.is_morning()),
            flag((12..18).contains(&self.hour)),
            flag(self.is_evening()),
            flag(self.is_weekend()),
            flag(!self.is_weekend()),
        ]
    }
}

/// The hidden click model in force. Tastes can change: after a drift the
/// coffee drinkers come in the evening instead of the morning (the
/// time-of-day effect moves from `is_morning` to `is_evening`), and weekend
/// visitors want salads and desserts instead of pizzas and burgers, which a
/// learner must notice in its feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tastes {
    /// Coffee in the morning.
    #[default]
    Usual,
    /// Coffee in the evening; salads and desserts at weekends.
    Drifted,
}

impl Tastes {
    /// The probability that this visitor clicks this product when it is shown.
    #[must_use]
    pub fn click_probability(self, visit: &Visit, product: &Product) -> f64 {
        let (coffee_time, weekend_treats) = match self {
            Tastes::Usual => (visit.is_morning(), [Category::Pizzas, Category::BurgersAndSandwiches]),
            Tastes::Drifted => (visit.is_evening(), [Category::Salads, Category::Desserts]),
        };
        let mut logit: f64 = -2.5;
        if coffee_time && product.category == Category::Coffee {
            logit += 2.5;
        }
        if visit.is_weekend() && weekend_treats.contains(&product.category) {
            logit += 1.8;
        }
        if scale(visit.user.age, AGE_RANGE) < 0.25 && product.price_scaled > 0.8 {
            logit -= 3.0;
        }
        if visit.user.source == SEARCH {
            logit += 0.5;
        }
        1.0 / (1.0 + (-logit).exp())
    }

    /// The visitor reads the list in order and clicks the first product a
    /// Bernoulli draw accepts. Returns the position clicked, if any.
    pub fn react(self, rng: &mut Rng, visit: &Visit, shown: &[&Product]) -> Option<usize> {
        shown.iter().position(|product| rng.bernoulli(self.click_probability(visit, product)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn product(category: Category, price_scaled: f64) -> Product {
        Product { id: "x".into(), name: "x".into(), category, price: 0.0, price_scaled }
    }

    fn visit(age: f64, source: usize, day: u8, hour: u8) -> Visit {
        Visit { user: User { age, male: true, latitude: 53.45, longitude: -2.2, source }, day, hour }
    }

    #[test]
    fn click_model_matches_the_formula_on_hand_made_cases() {
        let coffee = product(Category::Coffee, 0.1);
        let pizza = product(Category::Pizzas, 0.5);
        let pricey = product(Category::PubClassics, 0.9);
        // Tuesday 08:00, 40 years old, from search: −2.5 + 2.5 + 0.5
        assert_eq!(Tastes::Usual.click_probability(&visit(40.0, SEARCH, 1, 8), &coffee), sigmoid(0.5));
        // Same coffee in the afternoon from email: −2.5
        assert_eq!(Tastes::Usual.click_probability(&visit(40.0, 3, 1, 14), &coffee), sigmoid(-2.5));
        // Saturday pizza from organic: −2.5 + 1.8
        assert!((Tastes::Usual.click_probability(&visit(40.0, 0, 5, 20), &pizza) - sigmoid(-0.7)).abs() < 1e-15);
        // A 20-year-old (scaled 0.074) and an expensive dish: −2.5 − 3.0 + 0.5
        assert_eq!(Tastes::Usual.click_probability(&visit(20.0, SEARCH, 2, 20), &pricey), sigmoid(-5.0));
        // A 40-year-old is not put off by the price.
        assert_eq!(Tastes::Usual.click_probability(&visit(40.0, SEARCH, 2, 20), &pricey), sigmoid(-2.0));
        // Sunday morning coffee: both time effects can't stack on coffee (weekend bonus is pizza/burgers only).
        assert_eq!(Tastes::Usual.click_probability(&visit(40.0, SEARCH, 6, 9), &coffee), sigmoid(0.5));
        // After the drift the same morning coffee is −2.5 + 0.5, and an
        // evening one (19:00) gets the +2.5; the other effects stay.
        assert_eq!(Tastes::Drifted.click_probability(&visit(40.0, SEARCH, 1, 8), &coffee), sigmoid(-2.0));
        assert_eq!(Tastes::Drifted.click_probability(&visit(40.0, SEARCH, 1, 19), &coffee), sigmoid(0.5));
        assert_eq!(Tastes::Drifted.click_probability(&visit(20.0, SEARCH, 2, 20), &pricey), sigmoid(-5.0));
        // Saturday: pizza loses its −2.5 + 1.8, a salad gains it.
        assert_eq!(Tastes::Drifted.click_probability(&visit(40.0, 0, 5, 20), &pizza), sigmoid(-2.5));
        let salad = product(Category::Salads, 0.5);
        assert!((Tastes::Drifted.click_probability(&visit(40.0, 0, 5, 20), &salad) - sigmoid(-0.7)).abs() < 1e-15);
    }

    #[test]
    fn context_vector_layout() {
        let v = visit(43.0, SEARCH, 6, 19);
        let x = v.context();
        assert_eq!(x.len(), DIM);
        assert!((x[0] - 0.5).abs() < 1e-12, "age 43 scales to 0.5");
        assert_eq!(&x[3..5], &[1.0, 0.0], "male one-hot");
        assert_eq!(&x[5..10], &[0.0, 0.0, 1.0, 0.0, 0.0], "search one-hot");
        assert_eq!(&x[10..15], &[0.0, 0.0, 1.0, 1.0, 0.0], "evening, weekend");
        let night = visit(30.0, 0, 1, 3).context();
        assert_eq!(&night[10..15], &[0.0, 0.0, 0.0, 0.0, 1.0], "03:00 on a weekday");
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn catalogue_and_visits_are_realistic_and_deterministic() {
        let catalogue = Catalogue::generate(1);
        assert!((180..=220).contains(&catalogue.products.len()));
        assert_eq!(catalogue.products[0].id, "1");
        assert!(catalogue.products.iter().any(|p| p.price_scaled == 0.0));
        assert!(catalogue.products.iter().any(|p| p.price_scaled == 1.0));
        assert!(Category::ALL.iter().all(|c| catalogue.products.iter().any(|p| p.category == *c)));
        let mut rng = Rng::new(3);
        let visits: Vec<Visit> = (0..20_000).map(|_| Visit::random(&mut rng)).collect();
        let search = visits.iter().filter(|v| v.user.source == SEARCH).count() as f64 / 20_000.0;
        assert!((search - 0.70).abs() < 0.02, "search share {search}");
        let weekend = visits.iter().filter(|v| v.is_weekend()).count() as f64 / 20_000.0;
        assert!((weekend - 2.0 / 7.0).abs() < 0.02);
        let mut again = Rng::new(3);
        assert_eq!(Visit::random(&mut again), visits[0]);
    }
}
