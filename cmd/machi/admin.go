package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/machi-chat/machi/clientapi"
	"github.com/machi-chat/machi/internal/config"
	"github.com/machi-chat/machi/internal/server"
	"github.com/machi-chat/machi/storage"
)

// admin runs the account commands against the configured database. They
// work while the server runs: SQLite in WAL mode takes a second writer
// (it waits for the lock), PostgreSQL is shared anyway.
func admin(args []string) error {
	if len(args) == 0 {
		fmt.Print(usage)
		return errors.New("admin: missing command")
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("admin "+cmd, flag.ContinueOnError)
	cfgPath := configFlag(fs)
	isAdmin := fs.Bool("admin", false, "make the user a server admin")
	password := fs.String("password", "", "password (read from standard input if empty)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := server.OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()

	userArg := func() (string, error) {
		if fs.NArg() != 1 {
			return "", fmt.Errorf("admin %s: want exactly one USERNAME", cmd)
		}
		name := strings.TrimPrefix(fs.Arg(0), "@")
		if local, server, ok := strings.Cut(name, ":"); ok {
			if server != cfg.ServerName {
				return "", fmt.Errorf("%s is not on this server (%s)", fs.Arg(0), cfg.ServerName)
			}
			name = local
		}
		return "@" + strings.ToLower(name) + ":" + cfg.ServerName, nil
	}
	readPassword := func() (string, error) {
		if *password != "" {
			return *password, nil
		}
		fmt.Fprint(os.Stderr, "Password: ")
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if err != nil {
				return "", fmt.Errorf("read password: %w", err)
			}
			return "", errors.New("empty password")
		}
		return line, nil
	}

	switch cmd {
	case "create-user":
		userID, err := userArg()
		if err != nil {
			return err
		}
		pw, err := readPassword()
		if err != nil {
			return err
		}
		if err := clientapi.CreateUser(ctx, store, userID, pw, *isAdmin, cfg.Registration.BcryptCost); err != nil {
			if errors.Is(err, storage.ErrConflict) {
				return fmt.Errorf("user %s already exists", userID)
			}
			return err
		}
		fmt.Printf("created %s%s\n", userID, map[bool]string{true: " (admin)"}[*isAdmin])
	case "reset-password":
		userID, err := userArg()
		if err != nil {
			return err
		}
		pw, err := readPassword()
		if err != nil {
			return err
		}
		// A reset is what an admin does when a password may be known to
		// someone else: every session ends (within seconds on a running
		// server, which re-checks cached tokens).
		deleted, err := clientapi.ChangePassword(ctx, store, userID, pw, cfg.Registration.BcryptCost, "")
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("no user %s", userID)
		}
		if err != nil {
			return err
		}
		fmt.Printf("password of %s reset; %d device(s) logged out\n", userID, len(deleted))
	case "list-users":
		users, err := store.ListUsers(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tADMIN\tDEACTIVATED\tCREATED")
		for _, u := range users {
			fmt.Fprintf(tw, "%s\t%v\t%v\t%s\n", u.UserID, u.IsAdmin, u.Deactivated, time.UnixMilli(u.CreatedTS).Format(time.RFC3339))
		}
		return tw.Flush()
	default:
		fmt.Print(usage)
		return fmt.Errorf("admin: unknown command %q", cmd)
	}
	return nil
}
