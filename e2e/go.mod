module github.com/tetherproxy/tether/e2e

go 1.26.0

require (
	github.com/gobwas/ws v1.5.0
	github.com/tetherproxy/tether v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
)

require github.com/gobwas/httphead v0.1.0 // indirect

replace github.com/tetherproxy/tether => ../
