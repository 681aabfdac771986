package Crypt::Ed25519;
# The part of CPAN's Crypt::Ed25519 that SyTest calls, over CryptX
# (Debian's libcryptx-perl), because Debian does not package Crypt::Ed25519.
# sytest/run.sh puts this folder on PERL5LIB.
use strict;
use warnings;

use Carp qw( croak );
use Crypt::PK::Ed25519;
use Crypt::PRNG ();

our $VERSION = '1.05';

sub _key
{
   my ( $raw, $kind ) = @_;
   my $k = Crypt::PK::Ed25519->new;
   $k->import_key_raw( $raw, $kind );
   return $k;
}

# A secret key is the 32-byte seed.
sub eddsa_secret_key { Crypt::PRNG::random_bytes( 32 ) }

sub eddsa_public_key
{
   my ( $secret ) = @_;
   defined $secret && length $secret == 32 or croak "Ed25519 secret key must be 32 bytes";
   return _key( $secret, 'private' )->export_key_raw( 'public' );
}

# eddsa_sign( $message, $public_key, $secret_key ): the public key is implied
# by the secret one.
sub eddsa_sign
{
   my ( $message, undef, $secret ) = @_;
   return _key( substr( $secret, 0, 32 ), 'private' )->sign_message( $message );
}

# verify( $message, $public_key, $signature ): false for a malformed key or
# signature, as the original.
sub eddsa_verify
{
   my ( $message, $public, $signature ) = @_;
   return 0 unless defined $public && length $public == 32 && defined $signature && length $signature == 64;
   my $k = eval { _key( $public, 'public' ) } or return 0;
   return $k->verify_message( $signature, $message ) ? 1 : 0;
}

*verify = \&eddsa_verify;

1;
