#!/usr/bin/env perl
# Reads one SyTest run (its TAP and its progress log, which names the file
# each test came from) and compares it with machi's pass list.
#
#   tap.pl summary RUN_DIR            counts by area → RUN_DIR/summary.txt,
#                                     each test's result (and a failure's or
#                                     skip's reason) → RUN_DIR/results.tsv
#   tap.pl check [--full] RUN_DIR     fails when a listed test ran and did not
#                                     pass (with --full: or did not run);
#                                     newly passing tests → RUN_DIR/candidates
#   tap.pl update RUN_DIR             adds the newly passing tests to the list
#   tap.pl causes RUN_DIR             failures grouped by cause (for
#                                     docs/sytest.md), the rest one by one
#
# A name passes when every test of that name in the run passed (SyTest has a
# few names used twice). Only core Perl: it runs before any package is there.
use strict;
use warnings;

use File::Basename qw( dirname );

my $PASSING = dirname( __FILE__ ) . "/passing";

my ( $cmd, @args ) = @ARGV;
my $full = 0;
@args = grep { $_ eq "--full" ? ( $full = 1, 0 )[1] : 1 } @args;
my ( $run ) = @args;
defined $cmd && defined $run && -d $run
   or die "usage: $0 summary|check [--full]|update|causes RUN_DIR\n";

my @tests = read_run( $run );

if( $cmd eq "summary" ) {
   summary( $run, @tests );
}
elsif( $cmd eq "check" ) {
   exit check( $run, $full, @tests );
}
elsif( $cmd eq "update" ) {
   update( @tests );
}
elsif( $cmd eq "causes" ) {
   causes( @tests );
}
else {
   die "unknown command $cmd\n";
}

# read_run returns one hash per test: num, file, area, name, status (pass,
# fail, skip or missing: started but no result, as when the run timed out).
sub read_run
{
   my ( $dir ) = @_;

   my ( %file_of, %name_of, $file );
   # SyTest writes its progress log without an encoding: it is read for the
   # file each test number came from, the names come from the TAP.
   open my $log, "<:raw", "$dir/progress.log" or die "open $dir/progress.log: $!\n";
   while( <$log> ) {
      chomp;
      if( m{^(tests/\S+\.pl):$} ) {
         $file = $1;
      }
      elsif( m{^\s+Test (\d+) (.*?)\.\.\. } and defined $file ) {
         $file_of{$1} = $file;
         $name_of{$1} = $2;   # replaced by the TAP's, for tests that have a result
      }
   }
   close $log;

   my ( %status, %reason, %body, $failing, $after );
   open my $tap, "<:encoding(UTF-8)", "$dir/results.tap" or die "open $dir/results.tap: $!\n";
   while( <$tap> ) {
      chomp;
      # a failure's first diagnostic line is its reason
      if( defined $failing and m{^# (.*)$} ) {
         next if $1 =~ m{^(Started|Ended): };
         $reason{$failing} = $1;
         ( $after, $failing ) = ( $failing, undef );
         next;
      }
      # and the line after it, for a failed request, the response body
      if( defined $after ) {
         $body{$after} = $1 if m{^# (\{.*)$};
         undef $after;
      }
      my ( $ok, $num, $rest ) = m{^(ok|not ok) (\d+) (.*)$} or next;
      undef $failing;
      my $st = $ok eq "ok" ? "pass" : "fail";
      $failing = $num if $st eq "fail";
      if( $rest =~ s{ # skip (.*)$}{} ) {
         $st = "skip";
         $reason{$num} = $1;
      }
      $rest =~ s{ # TODO .*$}{};
      $rest =~ s{^\(expected fail\) }{};
      $rest =~ s{ \(\d+ subtests\)$}{};
      $status{$num} = $st;
      $name_of{$num} = $rest;
   }
   close $tap;

   my %nums = map { $_ => 1 } keys %file_of, keys %status;
   return map {
      my $f = $file_of{$_} // "tests/unknown.pl";
      {
         num    => $_,
         file   => $f,
         area   => area( $f ),
         name   => $name_of{$_},
         status => $status{$_} // "missing",
         reason => $reason{$_} // "",
         body   => $body{$_} // "",
      }
   } sort { $a <=> $b } keys %nums;
}

# An area is a folder of tests/ (tests/30rooms) or a file at its top.
sub area
{
   my ( $file ) = @_;
   return $file =~ m{^(tests/[^/]+)/} ? $1 : $file;
}

# Federation tests are those of 50federation; others that need a second
# server through federation are counted with their own area.
sub kind
{
   return $_[0] =~ m{^tests/50federation} ? "federation" : "client-server";
}

sub by_name
{
   my %st;
   for my $t ( @_ ) {
      my $prev = $st{ $t->{name} };
      $st{ $t->{name} } = ( !defined $prev || $prev eq "pass" ) ? $t->{status} : $prev;
   }
   return %st;
}

sub read_passing
{
   my @names;
   open my $fh, "<:encoding(UTF-8)", $PASSING or return ();
   while( <$fh> ) {
      chomp;
      push @names, $_ if length;
   }
   return @names;
}

sub summary
{
   my ( $dir, @tests ) = @_;

   open my $tsv, ">:encoding(UTF-8)", "$dir/results.tsv" or die "write results.tsv: $!\n";
   print $tsv join( "\t", @{$_}{qw( num status file name reason )} ), "\n" for @tests;
   close $tsv;

   my ( %count, @order );
   for my $t ( @tests ) {
      for my $key ( $t->{area}, "total " . kind( $t->{area} ), "total" ) {
         push @order, $key unless $count{$key};
         $count{$key}{ $t->{status} }++;
         $count{$key}{all}++;
      }
   }

   open my $out, ">:encoding(UTF-8)", "$dir/summary.txt" or die "write summary.txt: $!\n";
   my $line = sub { printf $out "%-36s %6s %6s %6s %6s %6s\n", @_ };
   $line->( "area", "tests", "pass", "fail", "skip", "no res" );
   for my $key ( ( grep { !/^total/ } @order ), ( grep { /^total/ } sort @order ) ) {
      my $c = $count{$key};
      $line->( $key, $c->{all}, map { $c->{$_} // 0 } qw( pass fail skip missing ) );
   }
   close $out;

   open my $in, "<:encoding(UTF-8)", "$dir/summary.txt" or die;
   print while <$in>;
}

sub check
{
   my ( $dir, $full, @tests ) = @_;
   my %st = by_name( @tests );
   my @listed = read_passing();
   my %listed = map { $_ => 1 } @listed;

   my @broken  = grep { defined $st{$_} && $st{$_} ne "pass" } @listed;
   my @not_run = grep { !defined $st{$_} } @listed;
   my @new     = sort grep { $st{$_} eq "pass" && !$listed{$_} } keys %st;

   open my $c, ">:encoding(UTF-8)", "$dir/candidates" or die "write candidates: $!\n";
   print $c "$_\n" for @new;
   close $c;

   binmode STDOUT, ":encoding(UTF-8)";
   print "listed tests that did not pass ($st{$_}): $_\n" for @broken;
   if( @not_run ) {
      print "listed tests not in this run: " . scalar( @not_run ) . "\n";
      print "  not run: $_\n" for $full ? @not_run : ();
   }
   print "newly passing (candidates for sytest/passing): $_\n" for @new;
   printf "pass list: %d listed, %d still pass, %d broken, %d not run; %d new candidates in %s/candidates\n",
      scalar @listed, @listed - @broken - @not_run, scalar @broken, scalar @not_run, scalar @new, $dir;

   return ( @broken || ( $full && @not_run ) ) ? 1 : 0;
}

sub update
{
   my ( @tests ) = @_;
   my %st = by_name( @tests );
   my %names = map { $_ => 1 } read_passing(), grep { $st{$_} eq "pass" } keys %st;

   # Sorted by code point (UTF-8 byte order), so that branches adding tests merge line by line.
   my @sorted = sort keys %names;
   open my $fh, ">:encoding(UTF-8)", $PASSING or die "write $PASSING: $!\n";
   print $fh "$_\n" for @sorted;
   close $fh;
   print "sytest/passing: " . scalar( @sorted ) . " tests\n";
}

# cause sorts a failure by its reason: the first rule that matches names it.
# What is left is "other", listed test by test: those are read by hand.
sub cause
{
   my ( $t ) = @_;
   my ( $r, $n ) = ( $t->{reason}, $t->{name} );
   my $remote = $n =~ m{remote|federation|\bfed\b}i || $t->{file} =~ m{federation|remote};

   return "room versions (a version machi refused)" if $r =~ m{M_UNSUPPORTED_ROOM_VERSION|M_INCOMPATIBLE_ROOM_VERSION};
   return "guest access (kind=guest registration is refused)" if $r =~ m{kind=guest};
   return "application services (not implemented)" if $t->{file} =~ m{^tests/60app-services};
   return "identity servers and 3PIDs (not implemented)" if $t->{file} =~ m{^tests/(54identity|12login/01threepid|30rooms/12thirdpartyinvite)};
   return "connection refused" if $r =~ m{Connection refused};
   return "federation (each listed in docs/sytest.md)" if $t->{file} =~ m{^tests/50federation} || $remote;
   if( $r =~ m{\( (\d{3}) [^)]*?https?://[^/\s]+(/[^?\s]*)} ) {
      my ( $code, $path ) = ( $1, $2 );
      if( $code eq "404" && $t->{body} =~ m{M_UNRECOGNIZED} ) {
         for( $path ) {
            s,/(?:!|%21)[^/]+,/{roomId},g;
            s,/(?:\@|%40)[^/]+,/{userId},g;
            s,/(?:#|%23)[^/]+,/{alias},g;
            s,/(?:\$|%24)[^/]+,/{eventId},g;
            s,/(?:r0|v1|v3|unstable)/,/*/,;
            s,/(devices|tags|pushrules/[^/]+/[^/]+|state/[^/]+|send/[^/]+|room_keys/keys)/[^/{]+,/$1/...,g;
         }
         return ( $r =~ m{^fixture failed} ? "missing endpoint (a fixture's): " : "missing endpoint: " ) . $path;
      }
   }
   return "timed out" if $r =~ m{Timed out};
   return "other";
}

sub causes
{
   my ( @tests ) = @_;
   binmode STDOUT, ":encoding(UTF-8)";
   my ( %count, @other );
   for my $t ( grep { $_->{status} eq "fail" || $_->{status} eq "missing" } @tests ) {
      my $c = cause( $t );
      $count{$c}++;
      push @other, $t if $c eq "other" || $c eq "timed out";
   }
   printf "%4d  %s\n", $count{$_}, $_ for sort { $count{$b} <=> $count{$a} || $a cmp $b } keys %count;
   print "\nother failures and timeouts, one by one:\n";
   for( @other ) {
      print "  $_->{file}: $_->{name}\n      $_->{reason}\n";
      print "      $_->{body}\n" if length $_->{body};
   }
}
