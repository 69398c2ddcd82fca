//! Kubernetes resource quantities as numbers, so `2048Mi` and the server's canonical `2Gi` compare
//! equal (the API server rewrites quantities it stores; comparing strings reports false changes).

/// Binary (`Ki`…`Ei`) and decimal (`k`…`E`) suffixes with their multipliers.
const SUFFIXES: [(&str, u128); 12] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// The value of a non-negative quantity in whole units (bytes for storage), rounded up as the API
/// server does; `None` when `q` is not a quantity. Accepts `123`, `1.5Gi`, `2048Mi`, `10G`, `1e9`.
pub fn parse(q: &str) -> Option<u128> {
    let q = q.trim();
    let (number, mult, exp10) = match SUFFIXES.iter().find(|(s, _)| q.ends_with(s)) {
        Some((s, m)) => (&q[..q.len() - s.len()], *m, 0u32),
        None => match q.split_once(['e', 'E']) {
            Some((n, e)) => (n, 1, e.parse::<u32>().ok().filter(|e| *e <= 30)?),
            None => (q, 1, 0),
        },
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 18
    {
        return None;
    }
    let digits: u128 = format!("{int}{frac}").parse().ok()?;
    let scale = 10u128.checked_pow(frac.len() as u32)?;
    let value = digits
        .checked_mul(mult)?
        .checked_mul(10u128.checked_pow(exp10)?)?;
    Some(value.div_ceil(scale))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn canonical_forms_are_equal() {
        assert_eq!(parse("2048Mi"), parse("2Gi"));
        assert_eq!(parse("1.5Gi"), parse("1536Mi"));
        assert_eq!(parse("1G"), parse("1e9"));
        assert_eq!(parse("1000M"), parse("1G"));
        assert_eq!(parse("10Gi"), Some(10 << 30));
        assert_eq!(parse("123"), Some(123));
        assert_eq!(parse(".5Ki"), Some(512));
    }

    #[test]
    fn order_is_numeric() {
        assert!(parse("1Gi") < parse("2Gi"));
        assert!(parse("999Mi") < parse("1Gi"));
        assert!(parse("1G") < parse("1Gi"));
    }

    #[test]
    fn non_quantities_are_refused() {
        for bad in [
            "", "Gi", "1.2.3Gi", "-1Gi", "1Xi", "1 Gi", "abc", "1e99", ".",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
