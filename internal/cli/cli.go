// Package cli holds what tether's commands share: an error that carries an
// exit code through cobra, and the way main ends on an error.
package cli

import (
	"errors"
	"fmt"
	"os"
)

// ExitError carries an exit code, and the message to print instead of the
// error, through cobra.
type ExitError struct {
	Code int
	Msg  string
}

func (e *ExitError) Error() string { return e.Msg }

// Exit ends the process on err, which a command of the program name
// returned: an [ExitError] prints its message (when there is one) and exits
// with its code, any other error prints "name: err" and exits with 1.
func Exit(name string, err error) {
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Msg != "" {
			fmt.Fprintln(os.Stderr, ee.Msg)
		}
		os.Exit(ee.Code)
	}
	fmt.Fprintln(os.Stderr, name+":", err)
	os.Exit(1)
}
