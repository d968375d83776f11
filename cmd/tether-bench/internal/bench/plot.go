package bench

import (
	"fmt"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WritePlot draws the round-trip CDF of every target (latency on a log
// axis) into file; the format follows the extension (.png, .svg, .pdf).
func (rep *Report) WritePlot(file string) error {
	c := rep.Config
	p := newCDFPlot(fmt.Sprintf("round trip CDF: %d sessions x %g frames/s x %d B", c.Sessions, c.Rate, c.FrameBytes),
		"round trip (µs, log scale)")
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	drawn := 0
	for i, t := range rep.Targets {
		cdf := rep.cdfs[t.Name]
		if len(cdf) == 0 {
			continue
		}
		pts := make(plotter.XYs, 0, len(cdf)+1)
		first := float64(cdf[0].Value) / 1e3
		pts = append(pts, plotter.XY{X: max(first, 1), Y: 0})
		for _, pt := range cdf {
			pts = append(pts, plotter.XY{X: max(float64(pt.Value)/1e3, 1), Y: pt.Fraction})
		}
		if err := addLine(p, i, pts, fmt.Sprintf("%s (p50 %s, p99 %s)", t.Name, fmtUS(t.RTT.P50), fmtUS(t.RTT.P99))); err != nil {
			return err
		}
		drawn++
	}
	if drawn == 0 {
		return fmt.Errorf("plot: no round trips were measured")
	}
	return save(p, file)
}

// WriteAddedPlot draws, for every target but the baseline, the added
// latency at each quantile (its round-trip quantile minus the baseline's,
// from p1 to p99.9) into file: the added-latency CDF per proxy.
func (rep *Report) WriteAddedPlot(file string) error {
	var base *Snapshot
	for _, t := range rep.Targets {
		if t.Role == "baseline" {
			base = rep.snaps[t.Name]
		}
	}
	if base == nil || base.Count == 0 {
		return fmt.Errorf("plot: no baseline round trips to subtract")
	}
	c := rep.Config
	what := fmt.Sprintf("%d sessions x %g frames/s x %d B", c.Sessions, c.Rate, c.FrameBytes)
	if c.Shape == ShapeLive {
		what = fmt.Sprintf("%d GPT-Live calls (append -> transcript)", c.Sessions)
	}
	p := newCDFPlot("added latency CDF (quantile minus direct): "+what, "added latency (µs)")
	drawn := 0
	for i, t := range rep.Targets {
		snap := rep.snaps[t.Name]
		if t.Role == "baseline" || snap == nil || snap.Count == 0 {
			continue
		}
		var pts plotter.XYs
		for q := 0.01; q <= 0.9991; {
			d := snap.Quantile(q) - base.Quantile(q)
			pts = append(pts, plotter.XY{X: float64(d) / 1e3, Y: q})
			switch {
			case q < 0.9:
				q += 0.01
			case q < 0.99:
				q += 0.001
			default:
				q += 0.0001
			}
		}
		label := t.Name
		if t.Added != nil {
			label = fmt.Sprintf("%s (added p50 %s, p99 %s)", t.Name, fmtUS(t.Added.P50), fmtUS(t.Added.P99))
		}
		if err := addLine(p, i, pts, label); err != nil {
			return err
		}
		drawn++
	}
	if drawn == 0 {
		return fmt.Errorf("plot: no proxy round trips were measured")
	}
	return save(p, file)
}

// addLine draws pts on p as the i-th target's line, named label in the legend.
func addLine(p *plot.Plot, i int, pts plotter.XYs, label string) error {
	l, err := plotter.NewLine(pts)
	if err != nil {
		return err
	}
	l.Color = plotutil.Color(i)
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(label, l)
	return nil
}

// save writes p to file, its format named by the file's extension.
func save(p *plot.Plot, file string) error {
	switch strings.ToLower(filepath.Ext(file)) {
	case ".png", ".svg", ".pdf", ".jpg", ".jpeg":
	default:
		return fmt.Errorf("plot %s: use a .png, .svg or .pdf file name", file)
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, file)
}

// newCDFPlot is an empty CDF plot: fraction of frames up, the x axis named xLabel.
func newCDFPlot(title, xLabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = "fraction of frames"
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	return p
}
