module github.com/tetherproxy/tether/cmd/tether-bench

go 1.26.0

require (
	github.com/gobwas/ws v1.5.0
	github.com/spf13/cobra v1.10.2
	github.com/tetherproxy/tether v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
	gonum.org/v1/plot v0.17.0
)

require (
	codeberg.org/go-fonts/liberation v0.5.0 // indirect
	codeberg.org/go-latex/latex v0.2.0 // indirect
	codeberg.org/go-pdf/fpdf v0.11.1 // indirect
	git.sr.ht/~sbinet/gg v0.7.0 // indirect
	github.com/ajstarks/svgo v0.0.0-20211024235047-1546f124cd8b // indirect
	github.com/gobwas/httphead v0.1.0 // indirect
	github.com/golang/freetype v0.0.0-20170609003504-e2365dfdc4a0 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.10 // indirect
	golang.org/x/image v0.30.0 // indirect
	golang.org/x/text v0.42.0 // indirect
)

// The tests run tether's mock upstream (upstreams/mock) in process, and
// TestBenchCommandLocal builds cmd/tether: both from this checkout.
replace github.com/tetherproxy/tether => ../..
