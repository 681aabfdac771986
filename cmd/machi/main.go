// Command machi is a Matrix homeserver for local-government staff.
//
//	machi [serve] [-config FILE]      run the server (first run writes FILE)
//	machi admin create-user …         manage accounts (works while serving)
package main

import (
	"fmt"
	"os"
)

const usage = `machi — a Matrix homeserver for local-government staff

Usage:
  machi [serve] [-config machi-data/machi.yaml]
      Run the server. On first run, writes a documented config file, a signing
      key and an SQLite database into the config file's folder.
  machi admin create-user [-config FILE] [-admin] [-password PW] USERNAME
  machi admin reset-password [-config FILE] [-password PW] USERNAME
  machi admin list-users [-config FILE]
      Manage accounts; works while the server runs. Without -password, the
      password is read from standard input.
`

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "admin" || args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "admin":
		err = admin(args)
	default:
		fmt.Print(usage)
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "machi:", err)
		os.Exit(1)
	}
}
