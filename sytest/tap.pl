#!/usr/bin/env perl
# Reads one SyTest run (its TAP and its progress log, which names the file
# each test came from) and compares it with machi's pass list.
#
#   tap.pl summary RUN_DIR            counts by area → RUN_DIR/summary.txt,
#                                     each test's result → RUN_DIR/results.tsv
#   tap.pl check [--full] RUN_DIR     fails when a listed test ran and did not
#                                     pass (with --full: or did not run);
#                                     newly passing tests → RUN_DIR/candidates
#   tap.pl update RUN_DIR             adds the newly passing tests to the list
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
   or die "usage: $0 summary|check [--full]|update RUN_DIR\n";

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

   my %status;
   open my $tap, "<:encoding(UTF-8)", "$dir/results.tap" or die "open $dir/results.tap: $!\n";
   while( <$tap> ) {
      chomp;
      my ( $ok, $num, $rest ) = m{^(ok|not ok) (\d+) (.*)$} or next;
      my $st = $ok eq "ok" ? "pass" : "fail";
      $st = "skip" if $rest =~ s{ # skip .*$}{};
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
   print $tsv join( "\t", @{$_}{qw( num status file name )} ), "\n" for @tests;
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
