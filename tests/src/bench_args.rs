//! The benchmark binaries' command lines: `--flag number` pairs.

/// Reads `--flag number` pairs from the command line, calling `set(flag,
/// value)` for each; panics (these are benchmarks run by hand) on a flag
/// without a number, or one `set` refuses (returns false).
pub fn numeric_flags(mut set: impl FnMut(&str, u64) -> bool) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let flag = pair.first().map_or("", String::as_str);
        let value = pair.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| panic!("{flag}: needs a number"));
        assert!(set(flag, value), "unknown flag {flag}");
    }
}
