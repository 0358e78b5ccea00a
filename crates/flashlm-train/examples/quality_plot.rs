//! Draw the curves of `scripts/quality-run.sh`: reads its `results.tsv` (columns: series,
//! snapshot, minutes, tokens, step, bpc; a header line first) and writes a PNG.
//!
//! usage: quality_plot RESULTS.tsv OUT.png
use std::path::Path;

use anyhow::Context;
use flashlm_train::plot::{QualityPoint, quality_png};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(a.len() == 2, "usage: quality_plot RESULTS.tsv OUT.png");
    let text = std::fs::read_to_string(&a[0]).with_context(|| format!("cannot read {}", a[0]))?;
    let mut series: Vec<(String, Vec<QualityPoint>)> = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        anyhow::ensure!(f.len() == 6, "{}:{}: expected 6 tab-separated columns", a[0], n + 1);
        let num = |i: usize| {
            f[i].parse::<f64>().with_context(|| format!("{}:{}: bad number {:?}", a[0], n + 1, f[i]))
        };
        let p = QualityPoint { minutes: num(2)?, tokens: num(3)?, bpc: num(5)? };
        match series.iter_mut().find(|(name, _)| name == f[0]) {
            Some((_, pts)) => pts.push(p),
            None => series.push((f[0].to_string(), vec![p])),
        }
    }
    quality_png(Path::new(&a[1]), &series)?;
    println!("wrote {}", a[1]);
    Ok(())
}
