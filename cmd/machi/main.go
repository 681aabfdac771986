// Command machi is a Matrix homeserver for local-government staff.
//
//	machi [serve] [-config FILE]      run the server (first run writes FILE)
//	machi admin COMMAND …             administer (through the running server)
package main

import (
	"fmt"
	"os"
	_ "time/tzdata" // working hours need Asia/Tokyo even where the OS has no zoneinfo
)

const usage = `machi — a Matrix homeserver for local-government staff

Usage:
  machi [serve] [-config machi-data/machi.yaml]
      Run the server. On first run, writes a documented config file, a signing
      key and an SQLite database into the config file's folder.

  machi admin COMMAND [-config FILE] [flags] ARGS
      Administer the server. Talks to the running server's admin socket, so
      changes take effect at once; with no server running, works on the
      database directly. Every command is written to the audit log.

  Accounts
    create-user [-admin] [-password PW] [-displayname N] [-groups G1,G2] USER
    reset-password [-password PW] USER     (logs out every device)
    list-users | show-user USER | set-admin USER true|false
    set-groups USER G1,G2                  (departments, for broadcasts)
    suspend [-reason R] USER | unsuspend USER
    deactivate [-reason R] USER            (irreversible)
  Devices (端末)
    devices USER                           (class, last seen time and address)
    revoke-device USER DEVICE              (a lost phone: its session ends now)
    issue-code [-ttl 72h] USER             (enrollment code for a new phone)
    list-codes USER | delete-code USER CODE_ID
  Working hours (執務時間)
    emergency declare -reason R (-for 6h | -until TIME) [-rooms !a:x,!b:x]
    emergency list | emergency end ID
    exempt -reason R USER | unexempt USER | list-exemptions
  Policy
    policy show | policy set FILE.yaml | policy reset
  Broadcast notices (一斉通知)
    broadcast [-group G] TEXT… | broadcasts | broadcast-status ID
  Audit log
    audit [-since 24h|TIME] [-rule R] [-action A] [-actor U] [-limit N] [-csv]
  Reports (通報)
    reports [-room ROOM] [-limit N]        (rooms and messages users reported)

  Without -password, the password is read from standard input.
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
