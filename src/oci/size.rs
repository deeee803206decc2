//! Sizes as people read them: `9.8 GiB`, `300 MiB`, `512 B`.

/// Bytes in binary units with at most one decimal.
pub fn human(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if n >= size {
            let v = n as f64 / size as f64;
            return if v >= 100.0 || v.fract() == 0.0 {
                format!("{v:.0} {name}")
            } else {
                format!("{v:.1} {name}")
            };
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn binary_units_with_one_decimal() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(300 << 20), "300 MiB");
        assert_eq!(human(10 << 30), "10 GiB");
        assert_eq!(human((98 << 30) / 10), "9.8 GiB");
    }
}
