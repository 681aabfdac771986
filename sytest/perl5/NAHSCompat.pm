package NAHSCompat;
# SyTest asks for Net::Async::HTTP::Server 0.09; the public mirror of its
# source stops at 0.07, and Debian does not package it. What SyTest uses of
# the later versions is small: a server's request_class and make_request
# (its HTTP servers hand out their own request objects), a request's
# query_form and query_param. This adds those to 0.07 and then says 0.09, so that SyTest's
# `use Net::Async::HTTP::Server 0.09` passes. sytest/run.sh loads it first
# (PERL5OPT=-MNAHSCompat); with 0.09 or later installed it does nothing.
use strict;
use warnings;

use Net::Async::HTTP::Server;
use Net::Async::HTTP::Server::Request;
use URI;

if( Net::Async::HTTP::Server->VERSION < 0.09 ) {
   no warnings 'redefine';

   my $configure = \&Net::Async::HTTP::Server::configure;
   *Net::Async::HTTP::Server::configure = sub {
      my ( $self, %params ) = @_;
      $self->{request_class} = delete $params{request_class} if exists $params{request_class};
      return $configure->( $self, %params );
   };

   # 0.07's connection always builds the base class. Later versions ask
   # the server's make_request (SyTest's federation server overrides it),
   # whose default builds the server's request_class.
   my $base = "Net::Async::HTTP::Server::Request";
   my $new = \&Net::Async::HTTP::Server::Request::new;
   *Net::Async::HTTP::Server::make_request = sub {
      my ( $self, @args ) = @_;
      my $class = $self->{request_class} || $base;
      return $class eq $base ? $new->( $base, @args ) : $class->new( @args );
   };
   *Net::Async::HTTP::Server::Request::new = sub {
      my ( $class, $conn, @rest ) = @_;
      my $server = $conn && $conn->can( "parent" ) ? $conn->parent : undef;
      if( $class eq $base && $server && $server->can( "make_request" ) ) {
         return $server->make_request( $conn, @rest );
      }
      return $new->( $class, $conn, @rest );
   };

   *Net::Async::HTTP::Server::Request::query_form = sub {
      my $self = shift;
      return $self->{req}->uri->query_form;
   };

   *Net::Async::HTTP::Server::Request::query_param = sub {
      my ( $self, $name ) = @_;
      my @form = $self->query_form;
      while( my ( $k, $v ) = splice @form, 0, 2 ) {
         return $v if $k eq $name;
      }
      return undef;
   };

   $Net::Async::HTTP::Server::VERSION = '0.09';
}

1;
