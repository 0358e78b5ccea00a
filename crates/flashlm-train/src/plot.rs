//! Loss curves rendered to PNG with plotters.

use std::path::Path;

use plotters::prelude::*;

fn register_font() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/Library/Fonts/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ] {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draw train loss (per logged step) and validation loss against steps into `path`.
/// Without a system font the curves are drawn without labels.
pub fn loss_png(
    path: &Path,
    train: &[(u64, f64)],
    val: &[(u64, f64)],
    stage_switches: &[u64],
) -> anyhow::Result<()> {
    let has_font = register_font();
    let all = train.iter().chain(val).filter(|(_, l)| l.is_finite());
    let (mut x_max, mut y_min, mut y_max) = (1u64, f64::INFINITY, f64::NEG_INFINITY);
    for &(s, l) in all {
        x_max = x_max.max(s);
        y_min = y_min.min(l);
        y_max = y_max.max(l);
    }
    if !y_min.is_finite() {
        return Ok(());
    }
    let pad = ((y_max - y_min) * 0.05).max(0.01);
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20).x_label_area_size(40).y_label_area_size(60);
    if has_font {
        builder.caption("FlashLM training loss", ("sans-serif", 22));
    }
    let mut chart = builder
        .build_cartesian_2d(0u64..x_max, (y_min - pad)..(y_max + pad))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if has_font {
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (nats/token)")
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    } else {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_y_mesh()
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    // A curriculum's stage switches: grey vertical lines.
    let (lo, hi) = (y_min - pad, y_max + pad);
    let grey = RGBColor(120, 120, 120);
    let sw = chart
        .draw_series(
            stage_switches.iter().map(|&x| PathElement::new(vec![(x, lo), (x, hi)], grey.stroke_width(2))),
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if has_font && !stage_switches.is_empty() {
        sw.label("stage switch")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(2)));
    }
    let t = chart
        .draw_series(LineSeries::new(train.iter().copied(), BLUE.stroke_width(2)))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if has_font {
        t.label("train").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    }
    let v = chart
        .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(3)).point_size(4))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if has_font {
        v.label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(3)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// One point of a quality-against-time curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityPoint {
    /// Training wall time, minutes.
    pub minutes: f64,
    /// Training tokens seen.
    pub tokens: f64,
    /// Validation bits per character.
    pub bpc: f64,
}

/// Draw validation BPC against training minutes (left) and against tokens seen (right), one
/// line per named series, into `path` (used by `scripts/quality-run.sh`).
pub fn quality_png(path: &Path, series: &[(String, Vec<QualityPoint>)]) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("cannot draw {}: {e:?}", path.display());
    let points = || series.iter().flat_map(|(_, p)| p.iter()).filter(|p| p.bpc.is_finite());
    anyhow::ensure!(points().next().is_some(), "no finite points to plot");
    let has_font = register_font();
    let (mut m_max, mut t_max, mut y_min, mut y_max) = (0.0f64, 0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for p in points() {
        m_max = m_max.max(p.minutes);
        t_max = t_max.max(p.tokens / 1e6);
        y_min = y_min.min(p.bpc);
        y_max = y_max.max(p.bpc);
    }
    let pad = ((y_max - y_min) * 0.05).max(0.01);
    let colors = [RED, BLUE, GREEN, MAGENTA, BLACK];
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, 2));
    for (panel, by_tokens) in panels.iter().zip([false, true]) {
        let x_max = if by_tokens { t_max } else { m_max } * 1.02 + 1e-9;
        let mut builder = ChartBuilder::on(panel);
        builder.margin(20).x_label_area_size(45).y_label_area_size(60);
        if has_font {
            builder.caption(
                if by_tokens { "validation BPC vs tokens seen" } else { "validation BPC vs training time" },
                ("sans-serif", 20),
            );
        }
        let mut chart =
            builder.build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad)).map_err(|e| err(&e))?;
        let mut mesh = chart.configure_mesh();
        if has_font {
            mesh.x_desc(if by_tokens { "tokens seen (millions)" } else { "wall-clock minutes" })
                .y_desc("BPC (original protocol)");
        } else {
            mesh.disable_x_mesh().disable_y_mesh();
        }
        mesh.draw().map_err(|e| err(&e))?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = colors[i % colors.len()];
            let xy = pts
                .iter()
                .filter(|p| p.bpc.is_finite())
                .map(|p| (if by_tokens { p.tokens / 1e6 } else { p.minutes }, p.bpc));
            let s = chart
                .draw_series(LineSeries::new(xy, color.stroke_width(2)).point_size(3))
                .map_err(|e| err(&e))?;
            if has_font {
                s.label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            }
        }
        if has_font {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_plot_writes_a_png_and_refuses_empty_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.png");
        let curve = |scale: f64| {
            (1..=5)
                .map(|i| QualityPoint {
                    minutes: i as f64,
                    tokens: i as f64 * 3e5 * scale,
                    bpc: 2.0 / i as f64,
                })
                .collect::<Vec<_>>()
        };
        quality_png(&path, &[("a".into(), curve(1.0)), ("b".into(), curve(1.5))]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let nan = vec![QualityPoint { minutes: 1.0, tokens: 1.0, bpc: f64::NAN }];
        assert!(quality_png(&dir.path().join("e.png"), &[("a".into(), nan)]).is_err());
        assert!(quality_png(&dir.path().join("e.png"), &[]).is_err());
    }
}
