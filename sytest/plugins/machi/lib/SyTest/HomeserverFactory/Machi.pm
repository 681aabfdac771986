# machi's homeserver factory for SyTest: `run-tests.pl -I Machi`.
#
# SyTest finds this file through SYTEST_PLUGINS (sytest/run.sh points it at
# machi's sytest/plugins folder), so nothing is copied into the checkout.

use strict;
use warnings;

require SyTest::Homeserver::Machi;

package SyTest::HomeserverFactory::Machi;
use base qw( SyTest::HomeserverFactory );

sub _init
{
   my $self = shift;

   $self->{args} = {
      binary => $ENV{MACHI_BINARY} // "../machi/bin/machi",
   };

   $self->SUPER::_init( @_ );
}

# Tests marked implementation_specific for "machi" run; those only for
# synapse or dendrite do not.
sub implementation_name
{
   return "machi";
}

sub get_options
{
   my $self = shift;

   return (
      'machi-binary=s' => \$self->{args}{binary},
      $self->SUPER::get_options(),
   );
}

sub print_usage
{
   print STDERR "       --machi-binary PATH   - the machi binary to test (env MACHI_BINARY)\n";
}

sub create_server
{
   my $self = shift;
   my %params = ( @_, %{ $self->{args} } );

   return SyTest::Homeserver::Machi->new( %params );
}

1;
